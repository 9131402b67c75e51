"""Configuration: one TOML file plus ``BCCDMS_*`` environment overrides.

Precedence (highest first): command-line flags, ``BCCDMS_<SECTION>_<KEY>`` environment
variables, the TOML file, the built-in defaults below. The defaults work on a laptop in
a checkout: data under ``<checkout>/data``, the demo pack under ``<checkout>/weights/demo``,
the server on 127.0.0.1:8080.

The TOML file is found from ``--config``, else ``BCCDMS_CONFIG``, else
``/etc/bccdms/config.toml`` when it exists, else ``<data dir>/config.toml`` when it exists.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT_DIR = PACKAGE_DIR.parent
SYSTEM_CONFIG = Path("/etc/bccdms/config.toml")
SYSTEM_DATA_DIR = Path("/var/lib/bccdms")


def _in_checkout() -> bool:
    return (CHECKOUT_DIR / "pyproject.toml").is_file() and (CHECKOUT_DIR / "kiosk").is_dir()


def default_data_dir() -> Path:
    return CHECKOUT_DIR / "data" if _in_checkout() else SYSTEM_DATA_DIR


def default_demo_pack() -> Path:
    return CHECKOUT_DIR / "weights" / "demo"


@dataclass
class PostConfig:
    # The health post's id and name travel with every record and USB bundle. An empty id
    # means "generate one at first start and keep it in the data folder".
    id: str = ""
    name: str = "Health post"
    # "clinical" refuses demo model packs; "demo" (the default on a fresh machine) allows them.
    mode: str = "demo"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # The box's address on the health post's network, for the phone colposcope (it is put in the
    # QR code): a second listener there serves the phone upload pages and nothing else, while the
    # kiosk stays on `host`. "auto": the box's private IPv4 address. Empty: no phones.
    lan_host: str = ""
    phone_port: int = 0              # the phones' listener port; 0: the kiosk's port
    threads: int = 8
    idle_logout_minutes: int = 10
    max_upload_mb: int = 30
    lockout_failures: int = 5
    lockout_minutes: int = 15
    # Wrong passwords from one client address (any accounts) within the window before each further
    # one makes its next login wait longer (2 s, 4 s ... up to the window; at most 30 s on the box's
    # own screen); independent of the per-account lockout, which such refused attempts do not count in.
    login_failures_per_address: int = 20
    login_failure_window_minutes: float = 10


@dataclass
class InferenceConfig:
    # auto: OpenVINO on x86-64, ONNX Runtime on ARM. Or "openvino" / "onnxruntime".
    runtime: str = "auto"
    precision: str = "int8"          # int8 | fp32
    threads: int = 0                 # 0: one per physical core
    # OpenVINO silently runs float parts in BF16 on CPUs that have it; that changes results,
    # so the appliance asks for f32 unless this is set deliberately to "bf16".
    openvino_float_precision: str = "f32"
    # Installed packs live under <data dir>/packs; the built-in demo pack is the fallback.
    demo_pack: str = ""
    # Faster decode of big JPEGs (libjpeg DCT scaling); its effect is measured in bench/.
    fast_jpeg_decode: bool = True
    max_image_pixels: int = 60_000_000
    # Flag images unlike the model's training images (a pack's `ood` statistics; see
    # appliance/inference/ood.py). Off only to compare results with and without the gate.
    out_of_scope_gate: bool = True
    # OpenVINO on x86-64: once a model is compiled, hand back the memory of the INT8 weights the
    # CPU plugin has repacked (one copy instead of two: ~0.35 GB less for seven models). A test
    # proves inference never reads them again; false keeps both copies (the safe way back if a
    # future OpenVINO version were to read them after compiling).
    openvino_hand_back_weights: bool = True


@dataclass
class CameraConfig:
    # auto | picamera2 | opencv | folder | none
    backend: str = "auto"
    device: str = "0"
    folder: str = ""
    # The folder backend (demo mode, tests) shows each image file this long before the next.
    folder_seconds_per_image: float = 5.0
    preview_width: int = 640
    preview_height: int = 480
    still_width: int = 0             # 0: the sensor's full resolution
    still_height: int = 0
    rotation: int = 0                # 0, 90, 180, 270
    hflip: bool = False
    vflip: bool = False
    # Microscopy wants stable colour: lock white balance and exposure after a calibration.
    lock_white_balance: bool = False
    colour_gains: list[float] = field(default_factory=list)   # [red, blue] when locked
    lock_exposure: bool = False
    exposure_us: int = 0
    preview_fps: int = 15
    # Fractions are allowed (tests use a few seconds).
    phone_link_minutes: float = 5
    # With no client asking for frames this long, the preview stops grabbing (saves CPU).
    preview_idle_seconds: float = 5.0


@dataclass
class ExchangeConfig:
    # The supervisor's public key (base64 X25519) that bundles are encrypted to.
    supervisor_public_key: str = ""
    supervisor_name: str = ""
    # Where removable drives appear; tests point this at a temporary folder.
    usb_roots: list[str] = field(default_factory=lambda: ["/media", "/run/media"])
    # Also count every folder directly under a root as a drive (tests; sticks mounted by hand).
    usb_folder_drives: bool = False
    # On a supervisor's box: post id -> post public signing key (base64 Ed25519).
    known_posts: dict[str, str] = field(default_factory=dict)
    # The supervisor's private key file (empty: <data dir>/keys/supervisor_exchange.key).
    supervisor_private_key: str = ""
    # Refuse a bundle that expands beyond this many MB when unpacked (decompression bombs).
    max_import_mb: int = 20000
    # DHIS2 mapping file (empty: the built-in appliance/exchange/dhis2_mapping.toml).
    dhis2_mapping: str = ""


@dataclass
class SecurityConfig:
    # Public Ed25519 keys (base64) whose signatures make a model pack trusted.
    trusted_model_keys: list[str] = field(default_factory=list)


@dataclass
class UiConfig:
    default_language: str = "en"
    calendar: str = "gregorian"      # gregorian | ethiopian


@dataclass
class Config:
    data_dir: Path = field(default_factory=default_data_dir)
    config_file: Path | None = None
    post: PostConfig = field(default_factory=PostConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    exchange: ExchangeConfig = field(default_factory=ExchangeConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    ui: UiConfig = field(default_factory=UiConfig)

    @property
    def packs_dir(self) -> Path:
        return self.data_dir / "packs"

    @property
    def demo_pack_dir(self) -> Path:
        return Path(self.inference.demo_pack) if self.inference.demo_pack else default_demo_pack()

    @property
    def clinical(self) -> bool:
        return self.post.mode == "clinical"


SECTIONS = ("post", "server", "inference", "camera", "exchange", "security", "ui")


def _coerce(value, annotation, where: str):
    """Turn a TOML or environment value into the type the dataclass field declares."""
    origin = typing.get_origin(annotation) or annotation
    try:
        if annotation is bool or annotation == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(value)
        if annotation is int or annotation == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if annotation is str or annotation == "str":
            return str(value)
        if origin is list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            (item_type,) = typing.get_args(annotation) or (str,)
            return [_coerce(v, item_type, where) for v in value]
        if annotation is float:
            return float(value)
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return {str(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise UserError(f"The setting {where} has a value of the wrong kind: {value!r}.",
                        "Fix it in the configuration file or the environment variable.") from None
    return value


def _apply(section_obj, values: dict, section: str, source: str) -> None:
    hints = typing.get_type_hints(type(section_obj))
    names = {f.name for f in dataclasses.fields(section_obj)}
    for key, value in values.items():
        if key not in names:
            raise UserError(f"The configuration {source} has an unknown setting [{section}] {key}.",
                            f"Known settings in [{section}]: {', '.join(sorted(names))}.")
        setattr(section_obj, key, _coerce(value, hints[key], f"[{section}] {key}"))


def find_config_file(explicit: str | os.PathLike | None, data_dir: Path) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"The configuration file {path} does not exist.",
                            "Check the path given with --config or BCCDMS_CONFIG.")
        return path
    env = os.environ.get("BCCDMS_CONFIG")
    if env:
        return find_config_file(env, data_dir)
    for candidate in (SYSTEM_CONFIG, data_dir / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_config(config_file: str | os.PathLike | None = None,
                data_dir: str | os.PathLike | None = None,
                environ: typing.Mapping[str, str] | None = None) -> Config:
    """Build the configuration from defaults, the TOML file and the environment."""
    env = os.environ if environ is None else environ
    data = Path(data_dir or env.get("BCCDMS_DATA_DIR") or default_data_dir())
    cfg = Config(data_dir=data)
    path = find_config_file(config_file or env.get("BCCDMS_CONFIG"), data)
    if path is not None:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"The configuration file {path} is not valid TOML ({exc}).",
                            "Fix the line it names, or restore the file from the installer.") from None
        except OSError as exc:
            raise UserError(f"The configuration file {path} cannot be read ({exc.strerror}).",
                            "Check its permissions.") from None
        cfg.config_file = path
        for key, value in doc.items():
            if key == "data_dir":
                if not data_dir and not env.get("BCCDMS_DATA_DIR"):
                    cfg.data_dir = Path(value)
                continue
            if key not in SECTIONS or not isinstance(value, dict):
                raise UserError(f"The configuration file {path} has an unknown section [{key}].",
                                f"Known sections: {', '.join(SECTIONS)}.")
            _apply(getattr(cfg, key), value, key, f"file {path}")
    for section in SECTIONS:
        prefix = f"BCCDMS_{section.upper()}_"
        overrides = {k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix)}
        if overrides:
            _apply(getattr(cfg, section), overrides, section, "environment")
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    choices = {
        ("post", "mode"): ("demo", "clinical"),
        ("inference", "runtime"): ("auto", "openvino", "onnxruntime"),
        ("inference", "precision"): ("int8", "fp32"),
        ("inference", "openvino_float_precision"): ("f32", "bf16"),
        ("camera", "backend"): ("auto", "picamera2", "opencv", "folder", "none"),
        ("ui", "calendar"): ("gregorian", "ethiopian"),
    }
    for (section, key), allowed in choices.items():
        value = getattr(getattr(cfg, section), key)
        if value not in allowed:
            raise UserError(f"The setting [{section}] {key} = {value!r} is not one of {', '.join(allowed)}.",
                            "Fix it in the configuration file or the environment.")
    if not 0 < cfg.server.port < 65536:
        raise UserError(f"The server port {cfg.server.port} is out of range.", "Use a port from 1 to 65535.")
    if not 0 <= cfg.server.phone_port < 65536:
        raise UserError(f"The phones' port {cfg.server.phone_port} is out of range.",
                        "Use a port from 1 to 65535, or 0 for the kiosk's port.")
    if cfg.server.login_failures_per_address < 1 or cfg.server.login_failure_window_minutes <= 0:
        raise UserError("[server] login_failures_per_address and login_failure_window_minutes must be more than 0.",
                        "The usual values are 20 and 10.")
    if cfg.camera.rotation not in (0, 90, 180, 270):
        raise UserError(f"The camera rotation {cfg.camera.rotation} is not 0, 90, 180 or 270.",
                        "Fix [camera] rotation.")
    cam = cfg.camera
    if not (1 <= cam.preview_fps <= 60 and cam.preview_width >= 16 and cam.preview_height >= 16):
        raise UserError("The camera preview settings are out of range.",
                        "Use [camera] preview_fps from 1 to 60 and a preview size of at least 16 × 16.")
    if cam.colour_gains and len(cam.colour_gains) != 2:
        raise UserError("[camera] colour_gains needs two numbers: the red and the blue gain.",
                        "For example colour_gains = [1.9, 1.6], or leave it empty to lock the measured gains.")
    if cam.phone_link_minutes <= 0:
        raise UserError("[camera] phone_link_minutes must be more than 0.", "The usual value is 5.")
