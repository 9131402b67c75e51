"""The sub-commands of ``bccdms-export`` (argument parsing and wiring; the work is elsewhere)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from appliance import catalogue
from appliance.errors import UserError

from .datasets import LAYOUTS


# ---------------------------------------------------------------- keygen

def _keygen(args) -> int:
    from appliance import signing
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; a signing key is never overwritten by accident.",
                        "Choose another --out file, or pass --force to replace the key.")
    key = signing.new_private_key()
    signing.write_private_key(key, out)
    print(signing.public_b64(key))
    print(f"Private key written to {out} (readable by you only): keep it off the boxes and back it up.\n"
          "The line above is its public key: add it to the box's [security] trusted_model_keys.",
          file=sys.stderr)
    return 0


def register_keygen(sub) -> None:
    p = sub.add_parser("keygen", help="create the Ed25519 key that signs model packs",
                       description="Create an Ed25519 signing key for model packs. Prints the public key "
                                   "to put in the box's [security] trusted_model_keys.")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the private key")
    p.add_argument("--force", action="store_true", help="replace an existing key file")
    p.set_defaults(func=_keygen)


# ---------------------------------------------------------------- demo

def _demo(args) -> int:
    from .demo import build_demo_pack
    key = _read_key(args.key) if args.key else None
    build_demo_pack(Path(args.out), arch=args.arch, private_key=key, demo=True, progress=not args.quiet,
                    image_size=args.image_size, include_fp32=args.fp32 or None, seed=args.seed,
                    overwrite=args.force)
    return 0


def register_demo(sub) -> None:
    p = sub.add_parser("demo", help="build the demo pack (untrained models, all seven) for a fresh box",
                       description="Build a signed demo pack for all seven models: untrained networks with "
                                   "BatchNorm statistics set on synthetic textures, INT8 for ONNX Runtime and "
                                   "OpenVINO. Every result the appliance produces with it says DEMO.")
    p.add_argument("--out", default="weights/demo", metavar="DIR", help="pack folder (default: weights/demo)")
    p.add_argument("--arch", choices=("resnet152", "tiny"), default="resnet152",
                   help="resnet152 (default; a few minutes) or tiny (seconds; for tests)")
    p.add_argument("--image-size", type=int, metavar="PX", help="input size (default 224, tiny 64)")
    p.add_argument("--fp32", action="store_true", help="also write FP32 ONNX and IR (large)")
    p.add_argument("--key", metavar="FILE", help="sign with this key (default: a throw-away key)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--force", action="store_true", help="replace the --out folder if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_demo)


# ---------------------------------------------------------------- dataset

def _dataset(args) -> int:
    from .field_dataset import build, format_report
    report = build(args.exports or [], Path(args.out), labels=args.labels, holdout_fraction=args.holdout_fraction,
                   extend_holdout=args.extend_holdout, public=args.add_public, seed=args.seed,
                   progress=not args.quiet)
    print(format_report(report))
    return 0


def register_dataset(sub) -> None:
    p = sub.add_parser("dataset", help="build (or grow) a training set from the posts' de-identified research exports",
                       description="Pool the de-identified research exports of many posts (unpacked with 'appliance "
                                   "import --extract-to') into one training set: confirmed labels only, by a label "
                                   "source policy, every image once (sha256), patients never on both sides, and a "
                                   "held-out set locked at the first build (see export/field_dataset.py).")
    p.add_argument("--from", dest="exports", nargs="+", metavar="EXPORT",
                   help="unpacked research exports (or folders of them)")
    p.add_argument("--out", required=True, metavar="DIR", help="the dataset folder (created, or grown)")
    p.add_argument("--labels", choices=("expert", "expert+clinician"), default="expert+clinician",
                   help="label sources used: expert reviews only, or expert else clinician (default)")
    p.add_argument("--holdout-fraction", type=float, default=0.2, metavar="F",
                   help="share of patients held out when the held-out set is drawn (default 0.2)")
    p.add_argument("--extend-holdout", action="store_true",
                   help="grow the held-out set with new patients (the old cases stay); otherwise it never changes")
    p.add_argument("--add-public", action="append", metavar="[ANALYSIS=]DIR",
                   help="a public dataset (BreakHis, Herlev, LBC manifest, class folders) for the training side only")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out draw (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_dataset)


# ---------------------------------------------------------------- train

def _add_data_options(p, required: bool) -> None:
    p.add_argument("--data", required=required, metavar="PATH",
                   help="dataset folder (BreakHis, Herlev, Type_1/2/3, class folders) or manifest CSV")
    p.add_argument("--layout", default="auto", choices=LAYOUTS, help="dataset layout (default: detected)")
    p.add_argument("--subset", metavar="NAME", help="manifest CSV only: keep rows whose split column is NAME "
                                                    "(e.g. eval for ../shared/datasets)")


def _train(args) -> int:
    from .train import TrainOptions, train
    opts = TrainOptions(model_id=args.model, data=args.data, out=args.out, layout=args.layout, subset=args.subset,
                        arch=args.arch, weights=args.weights, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, image_size=args.image_size, val_fraction=args.val_fraction, seed=args.seed,
                        freeze_backbone=args.freeze_backbone, workers=args.workers, device=args.device,
                        amp=not args.no_amp, resume=args.resume, force=args.force, init_from=args.init_from,
                        sampling=args.sampling)
    train(opts, progress=not args.quiet)
    return 0


def register_train(sub) -> None:
    p = sub.add_parser("train", help="fine-tune ResNet152 for one model of the catalogue",
                       description="Fine-tune a torchvision ResNet152 (Adam, cross-entropy, augmentation, class-balanced "
                                   "sampling) for one catalogue model, from ImageNet weights or from the deployed "
                                   "model's checkpoint (--init-from); keeps the epoch with the lowest validation loss "
                                   "and fits a temperature on the validation set. The validation split is by patient.")
    p.add_argument("--model", required=True, choices=list(catalogue.MODELS), help="catalogue model id")
    _add_data_options(p, required=True)
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoint.pt, last.pt, split.json)")
    p.add_argument("--arch", choices=("resnet152", "tiny"), default="resnet152", help="network (tiny: tests)")
    p.add_argument("--weights", default="imagenet", metavar="imagenet|none|PATH",
                   help="initial weights: torchvision ImageNet (default; downloaded once), none, or a state dict")
    p.add_argument("--epochs", type=int, default=20, help="epochs (default 20)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--image-size", type=int, default=224, metavar="PX", help="input size (default 224)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share held out for validation (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="random seed of split and training (default 0)")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train the classifier only (fast on a CPU; the backbone keeps its ImageNet features)")
    p.add_argument("--init-from", metavar="CHECKPOINT",
                   help="fine-tune from this checkpoint (the model the posts run); its sha256 goes on the model "
                        "card and into the pack manifest")
    p.add_argument("--sampling", choices=("balanced", "shuffle"), default="balanced",
                   help="epoch order: class-balanced draws (default) or a plain shuffle")
    p.add_argument("--workers", type=int, default=2, help="image-loading processes (default 2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: CUDA when present")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    p.add_argument("--force", action="store_true", help="start again over an existing run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_train)


# ---------------------------------------------------------------- export

def _export(args) -> int:
    from .pipeline import export_checkpoint
    export_checkpoint(Path(args.checkpoint), Path(args.out), version=args.version, force=args.force,
                      progress=not args.quiet)
    return 0


def register_export(sub) -> None:
    p = sub.add_parser("export", help="checkpoint → ONNX FP32 model folder (logits + features)",
                       description="Export a trained checkpoint to ONNX FP32 (input 'input', outputs 'logits' and "
                                   "'features', dynamic batch, opset 18), check it with onnx.checker and against "
                                   "torch in ONNX Runtime, and write the classifier and model.json beside it.")
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="checkpoint.pt from 'train'")
    p.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
    p.add_argument("--version", help="model version (default: today's date, YYYY.MM.DD)")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_export)


# ---------------------------------------------------------------- quantize

def _quantize(args) -> int:
    from .pipeline import quantize_model_folder
    runtimes = ("onnxruntime", "openvino") if args.runtime == "both" else (args.runtime,)
    quantize_model_folder(Path(args.model_dir), data=args.data, layout=args.layout, subset=args.subset,
                          calibration_images=args.calibration_images, seed=args.seed, runtimes=runtimes,
                          progress=not args.quiet)
    return 0


def register_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="INT8 for ONNX Runtime and OpenVINO (+ OpenVINO IR FP32)",
                       description="Quantize a model folder: ONNX Runtime static INT8 (QDQ, per-channel, U8S8, after "
                                   "quant_pre_process), OpenVINO IR FP32 and NNCF INT8, calibrated on training "
                                   "images. Reports how many convolutions really run in INT8.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model folder written by 'export'")
    _add_data_options(p, required=False)
    p.add_argument("--calibration-images", type=int, default=128, metavar="N", help="default 128")
    p.add_argument("--runtime", choices=("both", "onnxruntime", "openvino"), default="both")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_quantize)


# ---------------------------------------------------------------- evaluate

def _evaluate(args) -> int:
    import json
    from .evaluate import evaluate, format_report
    report = evaluate(Path(args.model_dir), checkpoint=args.checkpoint, data=args.data, layout=args.layout,
                      subset=args.subset, split_side=args.split, limit=args.limit, progress=not args.quiet,
                      write=not args.no_write, card_dir=args.card, ood_data=args.ood_data,
                      refer_target=args.refer_target, false_alarm=args.false_alarm,
                      commands=[args.command_line])
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.json}", file=sys.stderr)
    return 0


def register_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, ROC, calibration, refer band, out-of-scope gate, INT8 parity; "
                                        "model card",
                       description="Run every form of a model (torch from --checkpoint, ONNX FP32, ONNX Runtime INT8, "
                                   "OpenVINO FP32/INT8) on the same images: top-1 agreement and max |Δlogit| against "
                                   "the reference, accuracy, balanced accuracy, confusion matrix, ROC AUC, calibration "
                                   "error before/after temperature scaling. On the validation split of the dataset "
                                   "trained on, it also chooses the refer band (refer_below), fits the out-of-scope "
                                   "gate and writes the model card into the model folder, for 'pack'.")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model folder from 'export', or PACK/<model id>")
    _add_data_options(p, required=True)
    p.add_argument("--checkpoint", metavar="FILE", help="also run the torch model (the parity reference)")
    p.add_argument("--split", choices=("auto", "val", "train", "all"), default="auto",
                   help="which images of a dataset trained on (default: its validation side)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate a seeded sample of N images")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--ood-data", action="append", metavar="PATH",
                   help="images of another kind (another dataset folder) the out-of-scope gate should flag; "
                        "repeatable (e.g. ../shared/datasets/breakhis for a Pap-smear model)")
    p.add_argument("--refer-target", type=float, default=0.95, metavar="ACC",
                   help="accuracy wanted on the results that are not referred (default 0.95)")
    p.add_argument("--false-alarm", type=float, default=0.05, metavar="RATE",
                   help="share of in-scope validation images the out-of-scope gate may flag (default 0.05)")
    p.add_argument("--card", metavar="DIR", help="also write the model card (markdown, JSON, PNG figures) here")
    p.add_argument("--no-write", action="store_true",
                   help="only report: do not store the refer band, gate and card in the model folder")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_evaluate)


# ---------------------------------------------------------------- pack

def _pack(args) -> int:
    from .pipeline import build_pack
    build_pack([Path(m) for m in args.model_dirs], Path(args.out), _read_key(args.key), pack_id=args.pack_id,
               version=args.version, description=args.description or "", include_fp32=not args.no_fp32,
               force=args.force, progress=not args.quiet, recommended=args.recommended, override=args.override)
    return 0


def register_pack(sub) -> None:
    p = sub.add_parser("pack", help="assemble and sign a model pack from model folders",
                       description="Copy model folders into a pack, write manifest.json (classes, input, temperature, "
                                   "validation figures, provenance, sha256 of every file) and sign it with an Ed25519 "
                                   "key from 'bccdms-export keygen'. A pack may hold any of the seven models.")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help="model folders (after 'quantize')")
    p.add_argument("--out", required=True, metavar="DIR", help="pack folder to write")
    p.add_argument("--key", required=True, metavar="FILE", help="private key from 'bccdms-export keygen'")
    p.add_argument("--pack-id", help="pack id (default: bccdms-<version>)")
    p.add_argument("--version", help="pack version (default: today's date)")
    p.add_argument("--description", help="one line shown to admins")
    p.add_argument("--no-fp32", action="store_true", help="leave the FP32 files out (smaller pack)")
    p.add_argument("--recommended", action="store_true",
                   help="a challenger for the posts: refused unless every model's comparison ('compare') passes the "
                        "promotion rule")
    p.add_argument("--override", metavar="REASON",
                   help="with --recommended: recommend a challenger that fails the rule, for this reason (printed on "
                        "the model cards and shown at the posts)")
    p.add_argument("--force", action="store_true", help="replace the --out folder if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_pack)


# ---------------------------------------------------------------- compare

def _compare(args) -> int:
    from .compare import compare, format_comparison
    from .comparison_record import write_into_model_folders, write_into_pack
    from .compare import open_side
    result = compare(args.champion, args.challenger, args.data, models=args.model, runtime=args.runtime,
                     resamples=args.bootstrap, seed=args.seed, progress=not args.quiet, command=args.command_line)
    print(format_comparison(result))
    side = open_side(args.challenger, "challenger")
    out = Path(args.out) if args.out else side.path / "comparison.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    written = [out]
    if side.kind == "pack":
        if args.key:
            written.append(write_into_pack(result, side.path, _read_key(args.key)))
        else:
            print("The pack's manifest and cards are unchanged: pass --key FILE to record the comparison in them "
                  "(it signs the manifest again).", file=sys.stderr)
    else:
        written += write_into_model_folders(result, {m: folder for m, (_, _, folder) in side.models.items()})
    print(f"comparison written to {', '.join(map(str, written))}", file=sys.stderr)
    return 0


def register_compare(sub) -> None:
    p = sub.add_parser("compare", help="champion against challenger on the locked held-out set; recommended or not",
                       description="Run the champion (the pack the posts run) and the challenger (a pack, or model "
                                   "folders from 'export') on the same locked held-out cases at exam level: accuracy, "
                                   "balanced accuracy, sensitivity, specificity, ECE, refer-band coverage, bootstrap "
                                   "95 %% intervals over patients, McNemar, INT8 agreement with FP32; decide "
                                   "'recommended' by the promotion rule (export/promotion.py).")
    p.add_argument("--champion", required=True, nargs="+", metavar="PACK", help="the pack the posts run (or model folders)")
    p.add_argument("--challenger", required=True, nargs="+", metavar="PACK",
                   help="the new pack, or the new model folders (the comparison is written into them)")
    p.add_argument("--data", required=True, metavar="HELDOUT", help="the dataset folder of 'bccdms-export dataset'")
    p.add_argument("--model", action="append", metavar="ID", help="compare only this model (repeatable)")
    p.add_argument("--runtime", choices=("openvino", "onnxruntime"), default="openvino",
                   help="the INT8 runtime the posts run (default openvino; onnxruntime on ARM boxes)")
    p.add_argument("--bootstrap", type=int, default=2000, metavar="N", help="patient resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--out", metavar="FILE", help="the comparison JSON (default: comparison.json in the challenger)")
    p.add_argument("--key", metavar="FILE", help="a challenger pack: record the comparison in its manifest and sign it")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_compare)


# ---------------------------------------------------------------- helpers

def _read_key(path: str):
    from appliance import signing
    return signing.read_private_key(Path(path))


# Order is the order of ``bccdms-export --help``: the pipeline's order.
REGISTER = (register_dataset, register_train, register_export, register_quantize, register_evaluate, register_compare,
            register_pack, register_keygen, register_demo)
