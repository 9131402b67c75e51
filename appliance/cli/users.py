"""``appliance user add NAME --role ROLE | list | passwd NAME | disable NAME | enable NAME``.

The password comes from standard input when it is not a terminal (one line: scripts and the
installer pipe it in), else it is asked twice without echo. There is no default password.
"""
from __future__ import annotations

import json

from ..errors import UserError
from ..store.vocabulary import ROLES
from .prompt import read_secret

CLI_ACTOR = "cli"


def register(subparsers, common) -> None:
    user = subparsers.add_parser("user", parents=[common], help="create and manage user accounts",
                                 description="User accounts of this box (roles: nurse, doctor, supervisor, admin).")
    sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")

    p = sub.add_parser("add", parents=[common], help="create an account (password from stdin or asked twice)")
    p.add_argument("name", metavar="NAME", help="the username: 3 to 32 letters, digits, dots, dashes")
    p.add_argument("--role", required=True, choices=ROLES, help="what the account may do")
    p.add_argument("--display-name", default="", help="the name shown on screen and on reports")
    p.add_argument("--language", default=None, help="the kiosk language for this user (default: [ui] default_language)")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("list", parents=[common], help="list the accounts")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("passwd", parents=[common], help="set a new password (also unlocks a locked account)")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_passwd)

    p = sub.add_parser("disable", parents=[common], help="stop an account from logging in")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_disable, disabled=True)

    p = sub.add_parser("enable", parents=[common], help="let a disabled account log in again")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_disable, disabled=False)


def read_password(stdin=None) -> str:
    return read_secret("password", confirm=True, example="appliance user add ...", stdin=stdin)


def _open(cfg):
    from ..store import Store
    return Store.open(cfg)


def cmd_add(args, cfg) -> int:
    password = read_password()
    with _open(cfg) as store:
        user = store.users.create(args.name, password, args.role, display_name=args.display_name,
                                  language=args.language or cfg.ui.default_language, by=CLI_ACTOR)
    print(f"Created {user['role']} account {user['username']!r}.")
    return 0


def cmd_list(args, cfg) -> int:
    with _open(cfg) as store:
        users = store.users.list()
    if args.json:
        print(json.dumps(users, indent=2, ensure_ascii=False))
        return 0
    if not users:
        print("No accounts yet. Create the first administrator: appliance user add NAME --role admin")
        return 0
    for u in users:
        state = "disabled" if u.get("disabled") else "active"
        print(f"{u['username']:<24} {u['role']:<10} {state:<8}  {u.get('display_name', '')}")
    return 0


def cmd_passwd(args, cfg) -> int:
    with _open(cfg) as store:
        if store.users.get(args.name) is None:
            raise UserError(f"There is no user called {args.name!r}.", "List the accounts with 'appliance user list'.")
        password = read_password()
        store.users.set_password(args.name, password, by=CLI_ACTOR)
    print(f"The password of {args.name!r} was changed.")
    return 0


def cmd_disable(args, cfg) -> int:
    with _open(cfg) as store:
        store.users.set_disabled(args.name, args.disabled, by=CLI_ACTOR)
    print(f"The account {args.name!r} is {'disabled' if args.disabled else 'enabled'}.")
    return 0
