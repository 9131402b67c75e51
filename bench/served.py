"""A real ``appliance serve`` process of any checkout, for benchmarks that compare two versions
of the code in the same run (``--baseline /path/to/other/checkout``: its own ``.venv``).

The server runs in its own process, so its memory is measured from ``/proc/<pid>`` (RSS now,
and the peak since ``reset_peak()``: Linux's ``clear_refs`` resets ``VmHWM``), not mixed with
the benchmark's client. Clients are the tests' cookie-keeping HTTP client (tests/webutil.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from webutil import Client  # noqa: E402  (the tests' HTTP client, one copy)

LISTENING = re.compile(r"BCCDMS kiosk listening on http://[^\s/]+:(\d+)")
PASSWORD = "bench-pass-2026"


def say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


class Served:
    """``CHECKOUT/.venv/bin/appliance serve --port 0`` on a fresh data folder, with ``users``
    nurses (``nurse0`` …) created through the CLI first."""

    def __init__(self, checkout: Path, work: Path, *, users: int, pack: Path, config: str = "",
                 env: dict | None = None):
        self.checkout = Path(checkout)
        self.appliance = self.checkout / ".venv" / "bin" / "appliance"
        work.mkdir(parents=True, exist_ok=True)
        (work / "config.toml").write_text(
            '[camera]\nbackend = "none"\n[server]\nidle_logout_minutes = 120\n'
            f'[inference]\ndemo_pack = {json.dumps(str(pack))}\n' + config)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("BCCDMS_", "NOTIFY_SOCKET", "WATCHDOG_", "MALLOC_"))}
        self.env.update(BCCDMS_DATA_DIR=str(work / "data"), BCCDMS_CONFIG=str(work / "config.toml"))
        self.env.update(env or {})
        self.users = [f"nurse{i}" for i in range(users)]
        for name in self.users:
            subprocess.run([str(self.appliance), "user", "add", name, "--role", "nurse"], input=PASSWORD + "\n",
                           text=True, env=self.env, check=True, capture_output=True, timeout=120)
        self.log_path = work / "serve.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(self.appliance), "serve", "--port", "0"], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.port = self._wait_listening()
        self.url = f"http://127.0.0.1:{self.port}"

    def _wait_listening(self, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log_path.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError("appliance serve exited:\n" + self.log_path.read_text())
            time.sleep(0.1)
        raise RuntimeError("appliance serve did not listen in time")

    def wait_idle(self, quiet_seconds: float = 3.0, timeout: float = 900) -> None:
        """Until the server has used (almost) no CPU for ``quiet_seconds``: the background
        preload of every model has finished."""
        deadline = time.monotonic() + timeout
        last, quiet_since = self.cpu_seconds(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.cpu_seconds()
            if now - last > 0.05:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_seconds:
                return
            last = now
        raise RuntimeError("the server never went idle (models still loading?)")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _status(self, key: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(key)

    def rss_mb(self) -> float:
        return self._status("VmRSS")

    def peak_mb(self) -> float:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def client(self, user: str) -> Client:
        client = Client(self.url)
        assert client.login(user, PASSWORD).status == 303, f"login of {user} failed"
        return client

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def register_patient(client: Client, pid: str) -> str:
    """Register a new patient ``pid``; their uuid."""
    res = client.register_patient(pid, "Bench Patient")
    assert res.status == 303, res.text[:300]
    return res.location.rsplit("/", 1)[-1]


def median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def p90(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def in_turns(checkouts: list[tuple[str, Path]], pack: Path, runs: int, warmup: int,
             one_run) -> dict[str, list[float]]:
    """``one_run(client, patient_uuid) -> ms`` on every checkout's server, the servers started
    together and measured in turns (one run on each, then the next), so a change of the machine's
    load falls on all of them alike; the first ``warmup`` rounds are not kept."""
    work = Path(tempfile.mkdtemp(prefix="bench-in-turns-"))
    servers = {label: Served(checkout, work / str(i), users=1, pack=pack)
               for i, (label, checkout) in enumerate(checkouts)}
    try:
        for label, served in servers.items():
            say(f"{label}: loading the models")
            served.wait_idle()
        clients = {label: served.client(served.users[0]) for label, served in servers.items()}
        patients = {label: register_patient(client, "BENCH-T") for label, client in clients.items()}
        times: dict[str, list[float]] = {label: [] for label in servers}
        for i in range(runs + warmup):
            for label in servers:
                elapsed = one_run(clients[label], patients[label])
                if i >= warmup:
                    times[label].append(elapsed)
        return times
    finally:
        for served in servers.values():
            served.stop()
        shutil.rmtree(work, ignore_errors=True)


def checkouts_to_measure(baseline: Path | None, *, baseline_only: bool = False) -> list[tuple[str, Path]]:
    """(label, checkout) for ``--baseline`` (first, "before") and this checkout ("after")."""
    found = [("before: " + str(baseline), baseline)] if baseline else []
    if not baseline_only:
        found.append(("after: " + str(REPO), REPO))
    return [(label, Path(checkout).resolve()) for label, checkout in found]


def print_in_turns(times: dict[str, list[float]]) -> None:
    """Median and p90 per checkout, and after / before when there are two."""
    for label, values in times.items():
        print(f"  {label:60} median {median(values):7.1f} ms  p90 {p90(values):7.1f} ms")
    if len(times) == 2:
        (_, before), (_, after) = times.items()
        print(f"  ratio after / before (median): {median(after) / median(before):.2f}")
