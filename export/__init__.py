"""The torch side of BCCDMS: datasets, training, ONNX export, INT8 quantization, OpenVINO
conversion, evaluation and signed model packs (console script ``bccdms-export``).

Nothing under ``appliance/`` imports this package: the box never needs torch. Modules here
import torch, ONNX Runtime's quantizer, OpenVINO and NNCF inside the functions that need
them, so ``bccdms-export --help`` and ``export.transforms`` stay cheap to import.
"""
