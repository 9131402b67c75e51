"""Quick-login PINs in the real store (appliance/store/users.py): 6 digits, argon2id like passwords,
the same lockout as passwords, nurses and doctors only, never exported."""
from __future__ import annotations

import pytest

from appliance.errors import UserError
from appliance.store import Store
from appliance.store.users import AuthError

NURSE_PASSWORD = "nurse-pass-2026"


@pytest.fixture
def users(cfg):
    with Store.open(cfg) as store:
        store.users.create("admin", "admin-pass-2026", "admin", by=None)
        store.users.create("almaz", NURSE_PASSWORD, "nurse", display_name="Almaz Tesfaye", by="admin")
        store.users.create("dawit", "doctor-pass-2026", "doctor", display_name="Dr Dawit", by="admin")
        store.users.create("sara", "super-pass-2026", "supervisor", display_name="Sara", by="admin")
        yield store


def _stored(store, username):
    row = store.users.index.local[username]
    return store.users.stored(row)


def test_a_nurse_sets_a_pin_and_logs_in_with_it(users):
    users.users.set_pin("almaz", "482913", by="almaz")
    stored = _stored(users, "almaz")
    assert stored["pin_hash"].startswith("$argon2id$") and "482913" not in stored["pin_hash"]
    assert users.users.get("almaz")["has_pin"] is True and "pin_hash" not in users.users.get("almaz")
    user = users.users.authenticate_pin("almaz", "482913")
    assert user["username"] == "almaz" and "pin_hash" not in user
    assert users.users.authenticate("almaz", NURSE_PASSWORD)["username"] == "almaz"   # the password still works
    assert [e["action"] for e in users.audit.query(actor="almaz")[0]] == ["user.pin"]


@pytest.mark.parametrize("pin, message", [
    ("12345", "exactly 6 digits"), ("1234567", "exactly 6 digits"), ("12a456", "exactly 6 digits"),
    ("١٢٣٤٥٦", "exactly 6 digits"), ("000000", "too easy"), ("123456", "too easy"), ("987654", "too easy"),
])
def test_a_bad_pin_is_refused_and_nothing_changes(users, pin, message):
    with pytest.raises(UserError, match=message):
        users.users.set_pin("almaz", pin, by="almaz")
    assert _stored(users, "almaz").get("pin_hash") is None


@pytest.mark.parametrize("username", ["admin", "sara"])
def test_administrators_and_supervisors_cannot_have_a_pin(users, username):
    with pytest.raises(UserError, match="password only"):
        users.users.set_pin(username, "482913", by=username)
    # Nor log in with one, even if a record carried a PIN (a role changed after the PIN was set).
    users.users.set_pin("dawit", "482913", by="dawit")
    users.users.update("dawit", role="supervisor", by="admin")
    with pytest.raises(AuthError) as refused:
        users.users.authenticate_pin("dawit", "482913")
    assert refused.value.reason == "wrong"


def test_five_wrong_pins_lock_the_account_like_wrong_passwords(users, cfg):
    assert cfg.server.lockout_failures == 5
    users.users.set_pin("almaz", "482913", by="almaz")
    for _ in range(4):
        with pytest.raises(AuthError) as wrong:
            users.users.authenticate_pin("almaz", "111112")
        assert wrong.value.reason == "wrong" and wrong.value.message == "The PIN is wrong."
    with pytest.raises(AuthError) as locked:
        users.users.authenticate_pin("almaz", "111112")
    assert locked.value.reason == "locked"
    # Locked for the right PIN and for the right password alike.
    for attempt in (lambda: users.users.authenticate_pin("almaz", "482913"),
                    lambda: users.users.authenticate("almaz", NURSE_PASSWORD)):
        with pytest.raises(AuthError) as still:
            attempt()
        assert still.value.reason == "locked"


def test_wrong_pins_and_wrong_passwords_count_together(users):
    users.users.set_pin("almaz", "482913", by="almaz")
    for attempt in range(4):
        with pytest.raises(AuthError):
            if attempt % 2:
                users.users.authenticate_pin("almaz", "000001")
            else:
                users.users.authenticate("almaz", "not the password")
    with pytest.raises(AuthError) as locked:
        users.users.authenticate_pin("almaz", "000001")
    assert locked.value.reason == "locked"


def test_no_pin_unknown_user_and_removed_pin_all_read_wrong(users):
    for name in ("almaz", "nobody"):
        with pytest.raises(AuthError) as wrong:
            users.users.authenticate_pin(name, "482913")
        assert wrong.value.reason == "wrong"
    users.users.set_pin("almaz", "482913", by="almaz")
    users.users.set_pin("almaz", None, by="admin")
    assert users.users.get("almaz")["has_pin"] is False
    with pytest.raises(AuthError):
        users.users.authenticate_pin("almaz", "482913")
    assert users.audit.query(action="user.pin_removed")[1] == 1


def test_login_list_names_enabled_nurses_and_doctors_only(users):
    users.users.set_pin("almaz", "482913", by="almaz")
    users.users.create("old", "old-pass-2026", "nurse", display_name="Old Nurse", by="admin")
    users.users.set_disabled("old", True, by="admin")
    assert users.users.login_list() == [
        {"username": "almaz", "display_name": "Almaz Tesfaye", "has_pin": True},
        {"username": "dawit", "display_name": "Dr Dawit", "has_pin": False}]


def test_a_pin_is_durable_and_never_exported(users, cfg):
    users.users.set_pin("almaz", "482913", by="almaz")
    exported = [users.users.exported(r) for r in users.changes("users")]
    assert exported and all("pin_hash" not in r and "has_pin" not in r for r in exported)
    users.close()
    with Store.open(cfg) as again:
        assert again.users.authenticate_pin("almaz", "482913")["username"] == "almaz"


def test_display_name_of_local_and_unknown_people(users):
    assert users.users.display_name("almaz") == "Almaz Tesfaye"
    assert users.users.display_name("ALMAZ") == "Almaz Tesfaye"
    assert users.users.display_name("someone.else") == "someone.else"
