"""`appliance/` never imports torch, not even indirectly: the box runs without it."""
from __future__ import annotations

import subprocess
import sys
import textwrap

CHECK = textwrap.dedent("""
    import importlib, json, pkgutil, sys
    import appliance
    failed = {}
    names = sorted(m.name for m in pkgutil.walk_packages(appliance.__path__, "appliance."))
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:      # a module that cannot be imported is a bug of its own
            failed[name] = f"{type(exc).__name__}: {exc}"
    # Load and run a real runtime too: the runtimes' own imports must not pull torch in.
    from appliance.inference.runtimes import base
    for runtime in ("openvino", "onnxruntime"):
        base.create(runtime, base.RuntimeOptions(1, "int8", "f32"))
    heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torchvision", "nncf")))
    print(json.dumps({"modules": names, "failed": failed, "heavy": heavy}))
""")


def test_no_appliance_module_imports_torch():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    import json
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "appliance.inference.engine" in report["modules"] and "appliance.cli.diagnose" in report["modules"]
    assert report["heavy"] == [], f"torch-side modules imported: {report['heavy']}"
    assert report["failed"] == {}, report["failed"]
