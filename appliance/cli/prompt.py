"""Reading a secret (password, passphrase) for a command: asked twice on a terminal, else one line of stdin."""
from __future__ import annotations

import getpass
import sys

from ..errors import UserError


def read_secret(what: str, *, confirm: bool, example: str, stdin=None) -> str:
    """``what`` ("password", "passphrase") typed on the terminal (twice when ``confirm``), or the
    first line of standard input when it is not a terminal (scripts pipe it in)."""
    stdin = stdin or sys.stdin
    if stdin.isatty():
        first = getpass.getpass(f"{'New ' if confirm else ''}{what}: ".capitalize())
        if confirm and getpass.getpass(f"Repeat the {what}: ") != first:
            raise UserError(f"The two {what}s are not the same.", f"Run the command again and type the same {what} twice.")
        return first
    line = stdin.readline()
    secret = line[:-1] if line.endswith("\n") else line
    secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise UserError(f"No {what} was given on standard input.",
                        f"Pipe the {what} in, for example: printf '%s\\n' \"$SECRET\" | {example}")
    return secret
