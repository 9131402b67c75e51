"""The record store: users, patients, exams, audit log and the labelled image library.

TinyDB files made durable (atomic replace + fsync, previous generation kept), partitioned by
month so writes stay small, indexed in memory for the kiosk's queries, safe across threads and
processes. The interface is docs/ARCHITECTURE.md "Record store"; start with ``Store.open(cfg)``.
"""
from __future__ import annotations

from .patients import DuplicatePatient
from .store import KINDS, MERGE_RESULTS, Store
from .users import AuthError
from .vocabulary import ROLES

__all__ = ["Store", "AuthError", "DuplicatePatient", "ROLES", "KINDS", "MERGE_RESULTS"]
