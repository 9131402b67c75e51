"""docs/ARCHITECTURE.md names only things that exist (like datasette's test of its own documentation).

Every `store.<name>[.<name>...]` is an attribute of an open Store (or a module of appliance.store),
every `engine.<name>` an attribute of Engine, and every `appliance <command> [<sub-command>]` a
command of the console script. A rename that forgets the contract fails here.
"""
from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from appliance.cli import build_parser
from appliance.inference.engine import Engine

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
TEXT = DOC.read_text(encoding="utf-8")


def named(prefix: str) -> list[str]:
    """Dotted names after ``prefix.`` in the page (file names such as store.py left out)."""
    found = re.findall(rf"(?<![\w.]){prefix}\.([a-z_]+(?:\.[a-z_]+)*)", TEXT)
    return sorted({name for name in found if not name.endswith("py") or "." in name})


STORE_NAMES = named("store")
ENGINE_NAMES = named("engine")
COMMANDS = sorted(set(re.findall(r"`appliance ([a-z][a-z-]*)((?: [a-z][a-z-]*)?)", TEXT)))


def test_the_page_names_store_engine_and_command_names():
    assert len(STORE_NAMES) > 30 and len(ENGINE_NAMES) > 8 and COMMANDS, (STORE_NAMES, ENGINE_NAMES, COMMANDS)


@pytest.mark.parametrize("dotted", STORE_NAMES)
def test_every_store_name_exists(store, dotted):
    first, *rest = dotted.split(".")
    if not hasattr(store, first):       # a module of the store package (store.result_schema, store.vocabulary...)
        target = importlib.import_module(f"appliance.store.{first}")
    else:
        target = getattr(store, first)
    for part in rest:
        assert hasattr(target, part), f"docs/ARCHITECTURE.md names store.{dotted}, which does not exist"
        target = getattr(target, part)


@pytest.mark.parametrize("dotted", ENGINE_NAMES)
def test_every_engine_name_exists(cfg, dotted):
    target = Engine.from_config(cfg)      # cheap: reads the manifests; attributes set in __init__ count
    for part in dotted.split("."):
        assert hasattr(target, part), f"docs/ARCHITECTURE.md names engine.{dotted}, which does not exist"
        target = getattr(target, part)


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:      # argparse has no public way to list sub-commands
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("command,sub", COMMANDS)
def test_every_command_exists(command, sub):
    commands = _subcommands(build_parser())
    assert command in commands, f"docs/ARCHITECTURE.md names `appliance {command}`, which does not exist"
    subs = _subcommands(commands[command])
    if sub.strip() and subs:
        assert sub.strip() in subs, f"docs/ARCHITECTURE.md names `appliance {command}{sub}`, which does not exist"
