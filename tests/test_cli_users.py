"""``appliance user …`` and ``appliance stats``: passwords from stdin, clear errors, no tracebacks."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main as cli
from appliance.store import Store
from test_store_support import register, save_exam

REPO = Path(__file__).resolve().parents[1]
APPLIANCE = REPO / ".venv" / "bin" / "appliance"


def run(cfg, monkeypatch, *args, stdin: str = ""):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return cli([*args, "--data-dir", str(cfg.data_dir)])


def test_user_add_reads_the_password_from_stdin_in_a_real_process(cfg):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    done = subprocess.run([str(APPLIANCE), "user", "add", "Almaz", "--role", "admin", "--data-dir", str(cfg.data_dir)],
                          input="pass phrase 1\n", capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and "Created admin account 'almaz'" in done.stdout
    bad = subprocess.run([str(APPLIANCE), "user", "add", "hana", "--role", "nurse", "--data-dir", str(cfg.data_dir)],
                         input="short\n", capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("appliance: The password is too short")
    with Store.open(cfg) as store:
        assert [u["username"] for u in store.users.list()] == ["almaz"]
        assert store.users.authenticate("almaz", "pass phrase 1")


def test_user_commands(cfg, monkeypatch, capsys):
    assert run(cfg, monkeypatch, "user", "add", "boss", "--role", "admin", stdin="first pass\n") == 0
    assert run(cfg, monkeypatch, "user", "add", "hana", "--role", "doctor", "--display-name", "Dr. Hana",
               stdin="hana pass 1\r\n") == 0
    assert run(cfg, monkeypatch, "user", "add", "HANA", "--role", "nurse", stdin="another one\n") == 2
    assert "already a user called 'hana'" in capsys.readouterr().err
    assert run(cfg, monkeypatch, "user", "add", "tigist", "--role", "nurse", stdin="") == 2
    assert "No password was given" in capsys.readouterr().err
    assert run(cfg, monkeypatch, "user", "list", "--json") == 0
    users = json.loads(capsys.readouterr().out)
    assert [(u["username"], u["role"], u["display_name"]) for u in users] == \
        [("boss", "admin", "boss"), ("hana", "doctor", "Dr. Hana")]
    assert not any("password_hash" in u for u in users)

    assert run(cfg, monkeypatch, "user", "passwd", "hana", stdin="new hana pass\n") == 0
    assert run(cfg, monkeypatch, "user", "passwd", "ghost", stdin="whatever123\n") == 2
    assert run(cfg, monkeypatch, "user", "disable", "hana") == 0
    assert run(cfg, monkeypatch, "user", "disable", "boss") == 2
    assert "only active administrator" in capsys.readouterr().err
    assert run(cfg, monkeypatch, "user", "list") == 0
    assert "hana" in (listing := capsys.readouterr().out) and "disabled" in listing
    assert run(cfg, monkeypatch, "user", "enable", "hana") == 0
    with Store.open(cfg) as store:
        assert store.users.authenticate("hana", "new hana pass")["role"] == "doctor"
        assert [e["action"] for e in store.audit.query(actor="cli")[0]] == \
            ["user.enable", "user.disable", "user.password", "user.create", "user.create"]


def test_stats_command_json_text_and_dhis2(cfg, monkeypatch, capsys, tmp_path):
    with Store.open(cfg) as store:
        patient = register(store, age_years=35)
        decided = save_exam(store, patient, "pap_smear", "abnormal", seed=1, demo=False)
        store.exams.decide(decided["uuid"], "abnormal", by="doctor1")
        save_exam(store, patient, "cervix_type", "type_1", seed=2, demo=False)
    assert run(cfg, monkeypatch, "stats", "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["exams"], stats["patients"], stats["awaiting_decision"], stats["demo_exams"]) == (2, 1, 1, 0)
    assert stats["by_analysis"] == {"cervix_type": 1, "pap_smear": 1}
    assert stats["by_class"] == {"pap_smear": {"abnormal": 1}}          # decided exams only
    assert run(cfg, monkeypatch, "stats") == 0
    text = capsys.readouterr().out
    assert "exams: 2" in text and "Pap smear: 1" in text
    assert run(cfg, monkeypatch, "stats", "--json", "--from", "2000-01-01", "--to", "2000-12-31") == 0
    assert json.loads(capsys.readouterr().out)["exams"] == 0
    assert run(cfg, monkeypatch, "stats", "--from", "yesterday") == 2
    assert "not a date" in capsys.readouterr().err
    dhis2 = tmp_path / "dhis2.json"
    assert run(cfg, monkeypatch, "stats", "--dhis2", str(dhis2)) == 2      # a decided exam, but no org unit
    assert "no DHIS2 org unit" in capsys.readouterr().err and not dhis2.exists()
    from appliance.exchange.dhis2 import DEFAULT_MAPPING
    with Store.open(cfg) as store:
        mapping = DEFAULT_MAPPING.read_text().replace("[org_units]\n", f'[org_units]\n"{store.post_id}" = "OU_X"\n')
    (tmp_path / "mapping.toml").write_text(mapping)
    (tmp_path / "config.toml").write_text(f'[exchange]\ndhis2_mapping = "{tmp_path / "mapping.toml"}"\n')
    assert run(cfg, monkeypatch, "stats", "--dhis2", str(dhis2), "--config", str(tmp_path / "config.toml")) == 0
    values = json.loads(dhis2.read_text())["dataValues"]
    assert {v["categoryOptionCombo"]: v["value"] for v in values if v.get("categoryOptionCombo")} == {
        "BCCDMS_NORMAL": "0", "BCCDMS_ABNORMAL": "1"}            # the decided exam; the awaiting one is not counted


@pytest.mark.parametrize("args", [["user", "add", "x"], ["user"], ["backup"]])
def test_usage_errors_exit_non_zero(cfg, monkeypatch, args):
    with pytest.raises(SystemExit) as exc:
        run(cfg, monkeypatch, *args)
    assert exc.value.code == 2
