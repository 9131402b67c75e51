"""Which of two versions of a record is the later one: by its post's change number, never by a clock.

A record is written only at its *home post* (the post in its ``post_id``). Every write of it
there stamps it with that store's change counter (``post_seq``: ``store.change_seq()`` at that
write). The counter only ever goes up on that box, whatever its clock says, so of two versions
of a record the one with the higher ``post_seq`` is the later. Merges (``store.merge``, USB
imports) keep that one; ``created_at``/``updated_at`` stay on the record as information: what a
person reads, never the merge order. A box whose clock said 1970 or 2099 merges like any other.

Records written before change numbers existed (software before schema 3, and bundles made by
it) have no ``post_seq`` and count as change 0. Only between two versions with the same change
number does the later ``updated_at`` decide: two such counter-less versions (the order older
software used), or a post's box restored from a backup that then reused a number.
"""
from __future__ import annotations

FIELD = "post_seq"
MAX_CHANGE = 2 ** 63 - 1


def change_of(record: dict) -> int:
    """The record's change number at its home post (0: written before change numbers)."""
    value = record.get(FIELD)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def order_key(record: dict) -> tuple[int, str]:
    """Sorts the versions of one record oldest first."""
    return change_of(record), str(record.get("updated_at") or "")


def is_later(version: dict, than: dict) -> bool:
    """Is ``version`` a later version of the record than ``than``?"""
    return order_key(version) > order_key(than)


def stamp(record: dict, seq: int, home_post: str) -> None:
    """Mark a write: ``_seq`` is this store's change number (its change feed), and a record of
    this store's own post also takes it as ``post_seq``. Records of other posts (merged here)
    keep the change number their own post gave them."""
    record["_seq"] = seq
    if record.get("post_id") == home_post:
        record[FIELD] = seq


def problem(record: dict) -> str | None:
    """What is wrong with an incoming record's change number; None when it is fine or absent."""
    if FIELD not in record:
        return None
    value = record[FIELD]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_CHANGE:
        return f"its change number ({FIELD}) is not a whole number of 0 or more"
    return None
