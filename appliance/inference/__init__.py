"""The inference engine: image in, cascade result out, on the box's CPU without torch.

``imageio`` (safe decode) → ``quality`` (the retake advice) → ``preprocess`` (the training
transform in NumPy) → ``runtimes`` (OpenVINO or ONNX Runtime, models from verified pack
bytes) → ``cascade`` (the catalogue's rules, temperature, refer band) → ``result`` (JSON and
the ``heatmap`` PNG). ``engine.Engine`` ties them together; ``pack`` verifies model packs.
Contract: docs/ARCHITECTURE.md, "Inference engine".
"""
