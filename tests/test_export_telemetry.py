"""`bccdms-export` never sends telemetry: NNCF (quantization) and the OpenVINO converter send
usage data unless a consent file says no, so the console script blocks their telemetry module
before any command can import them (as the appliance does)."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_bccdms_export_blocks_nncf_and_openvino_telemetry(tmp_path):
    home = tmp_path / "home"          # no ~/intel consent file: NNCF would take that as consent
    home.mkdir()
    code = textwrap.dedent(f"""
        import sys
        from export.cli import main
        assert "openvino_telemetry" not in sys.modules
        assert main(["keygen", "--out", {str(tmp_path / "ml.key")!r}]) == 0
        try:
            import openvino_telemetry
        except ImportError:
            pass
        else:
            raise SystemExit("openvino_telemetry could be imported")
        import nncf.telemetry.wrapper as w
        print("nncf sends" if isinstance(w.telemetry, w.NNCFTelemetry) else "nncf silent")
        from openvino.tools.ovc import telemetry_utils
        print(telemetry_utils.tm.__name__)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "nncf silent" in done.stdout and "telemetry_stub" in done.stdout
    assert not (home / "intel").exists()
