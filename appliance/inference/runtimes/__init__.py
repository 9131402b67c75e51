"""Inference runtimes, one file each (``openvino``, ``onnxruntime``) behind ``base.Runtime``;
a runtime's library is imported only when that runtime is chosen."""
