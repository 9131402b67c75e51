from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.errors import UserError


def test_defaults_work_without_a_file(tmp_path):
    cfg = load_config(data_dir=tmp_path, environ={})
    assert cfg.server.host == "127.0.0.1" and cfg.server.port == 8080
    assert cfg.inference.openvino_float_precision == "f32"
    assert cfg.packs_dir == tmp_path / "packs"


def test_file_then_environment_override(tmp_path):
    f = tmp_path / "config.toml"
    f.write_text('[server]\nport = 9000\n[post]\nname = "Agaro health post"\n[exchange]\nusb_roots = ["/mnt/usb"]\n')
    cfg = load_config(config_file=f, data_dir=tmp_path, environ={"BCCDMS_SERVER_PORT": "9100"})
    assert cfg.server.port == 9100 and cfg.post.name == "Agaro health post"
    assert cfg.exchange.usb_roots == ["/mnt/usb"]


def test_data_dir_from_environment(tmp_path):
    cfg = load_config(environ={"BCCDMS_DATA_DIR": str(tmp_path / "d")})
    assert cfg.data_dir == Path(tmp_path / "d")


@pytest.mark.parametrize("text, words", [
    ("[server]\nprot = 1\n", "unknown setting [server] prot"),
    ("[sever]\nport = 1\n", "unknown section [sever]"),
    ("[server]\nport = 'abc'\n", "wrong kind"),
    ("[inference]\nruntime = 'tensorrt'\n", "not one of"),
    ("[server\n", "not valid TOML"),
])
def test_bad_configuration_gives_a_clear_sentence(tmp_path, text, words):
    f = tmp_path / "config.toml"
    f.write_text(text)
    with pytest.raises(UserError) as err:
        load_config(config_file=f, data_dir=tmp_path, environ={})
    assert words in str(err.value)
