"""The store's small durable key/value file ``meta.json``: schema version, post id, cursors."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from tinydb import Query, TinyDB

from ..errors import UserError
from . import durable
from .durable import DurableJSONStorage
from .partitions import file_ident

MAX_KEY = 100
MAX_VALUE_BYTES = 64 * 1024


class Meta:
    def __init__(self, path: Path, warn: Callable[[str], None]):
        self.path = path
        self._warn = warn
        self._db: TinyDB | None = None
        self._values: dict[str, Any] = {}
        self.ident: tuple | None = None
        self.reload()

    def reload(self) -> None:
        if self._db is not None:
            self._db.close()
        self._db = TinyDB(self.path, storage=DurableJSONStorage, warn=self._warn)
        self._values = {doc["key"]: doc.get("value") for doc in self._table().all() if "key" in doc}
        self.ident = self._stat()

    def _stat(self) -> tuple | None:
        with contextlib.suppress(FileNotFoundError):
            return file_ident(os.stat(self.path))
        return None

    def changed_on_disk(self) -> bool:
        return self._stat() != self.ident

    def _table(self):
        return self._db.table("meta", cache_size=0)

    def get(self, key: str, default: Any = None) -> Any:
        value = self._values.get(key, default)
        return json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value

    def set(self, key: str, value: Any) -> None:
        """Durably set ``key`` (call under the store's writer lock)."""
        if not isinstance(key, str) or not key or len(key) > MAX_KEY:
            raise UserError("A setting name must be text of 1 to 100 characters.", "This is a bug: report it.")
        try:
            size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode())
        except (TypeError, ValueError):
            raise UserError(f"The value for {key!r} is not plain JSON data.", "This is a bug: report it.") from None
        if size > MAX_VALUE_BYTES:
            raise UserError(f"The value for {key!r} is too large.", "This is a bug: report it.")
        if key in self._values and self._values[key] == value:
            return
        self._table().upsert({"key": key, "value": value}, Query().key == key)
        self._values[key] = json.loads(json.dumps(value))
        durable.when_committed(lambda: setattr(self, "ident", self._stat()))
        durable.if_aborted(self.reload)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
