"""The real ``appliance serve`` process on a port the system picks (``--port 0``).

Probing for a free port, closing it and handing the number to a server started later is a race
(another process may take the port in between); here the server binds port 0 itself and the
test reads the bound port back from the server's own log line.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

APPLIANCE = Path(sys.executable).with_name("appliance")
LISTENING = re.compile(r"BCCDMS kiosk listening on http://[^\s/]+:(\d+)")


class ServeProcess:
    """``appliance serve --port 0`` (or ``port``) with its output in ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int = 0):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(APPLIANCE), "serve", "--port", str(port)], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (waits for its log line; fails if it exits first)."""
        if self._port is None:
            self._port = self.wait_listening()
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_listening(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.search(self.output())
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                raise AssertionError(f"appliance serve exited ({self.proc.returncode}) before listening:\n"
                                     + self.output())
            time.sleep(0.05)
        raise AssertionError(f"appliance serve did not listen within {timeout:.0f} s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, *, already_signalled: bool = False, timeout: float = 30) -> int:
        """SIGTERM (as systemd stops it) unless sent already, then the exit status."""
        if not already_signalled and self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
