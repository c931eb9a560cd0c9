"""Typed getters over TOML tables; every error collected with its dotted path, unknown keys included."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any


class Errors:
    """Collects errors with their paths, so a file is reported whole rather than first-error-only."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(f"{path}: {message}" if path else message)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):  # a key with spaces, quotes or newlines: quoted, on one line
        return f"{path}[{key!r}]"
    return f"{path}.{key}" if path else key


class Table:
    """Typed getters over one TOML table; unknown keys are errors (a typo must not be ignored)."""

    def __init__(
        self, data: Mapping[str, Any], path: str, errors: Errors, known: tuple[str, ...] | type, defaults: Any = None
    ) -> None:
        """``known``: the keys, or a dataclass whose fields are the keys and whose defaults are the getters'."""
        if isinstance(known, type):
            defaults = known() if defaults is None else defaults
            known = tuple(f.name for f in dataclasses.fields(known))
        self.data, self.path, self.errors, self.defaults = data, path, errors, defaults
        for key in data:
            if key not in known:
                errors.add(join(path, key), f"unknown key (expected one of: {', '.join(known)})")

    def _get(self, key: str, types: type | tuple[type, ...], label: str, required: bool) -> Any:
        if key not in self.data:
            if required:
                self.errors.add(join(self.path, key), "missing")
            return None
        value = self.data[key]
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.errors.add(join(self.path, key), f"expected {label}, got {value!r}")
            return None
        if not isinstance(value, types):
            self.errors.add(join(self.path, key), f"expected {label}, got {value!r}")
            return None
        return value

    def get_str(self, key: str, *, required: bool = False) -> str | None:
        value = self._get(key, str, "str", required)
        if value is not None and not value.strip():
            self.errors.add(join(self.path, key), "must not be empty")
            return None
        return str(value) if value is not None else None

    def default(self, key: str) -> Any:
        """The dataclass's default for ``key`` (the one place it is written)."""
        return getattr(self.defaults, key)

    def get_int(self, key: str, default: int | None = None, *, minimum: int = 0) -> int:
        default = self.default(key) if default is None else default
        value = self._get(key, int, "int", False)
        if value is None:
            return default
        if value < minimum:
            self.errors.add(join(self.path, key), f"must be >= {minimum}, got {value}")
            return default
        return int(value)

    def get_float(self, key: str, default: float | None = None, *, minimum: float = 0.0) -> float:
        default = self.default(key) if default is None else default
        value = self._get(key, (int, float), "number", False)
        if value is None:
            return default
        if value < minimum:
            self.errors.add(join(self.path, key), f"must be >= {minimum}, got {value}")
            return default
        return float(value)

    def get_bool(self, key: str, default: bool | None = None) -> bool:
        default = self.default(key) if default is None else default
        value = self._get(key, bool, "bool", False)
        return default if value is None else bool(value)

    def get_str_list(self, key: str) -> tuple[str, ...]:
        value = self._get(key, list, "list of str", False)
        if value is None:
            return ()
        out = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            else:
                self.errors.add(join(join(self.path, key), i), f"expected str, got {item!r}")
        return tuple(out)

    def get_table(self, key: str, *, required: bool = False) -> dict[str, Any]:
        value = self._get(key, dict, "table", required)
        return value if value is not None else {}

    def get_array(self, key: str, *, required: bool = False) -> list[Any]:
        value = self._get(key, list, "array", required)
        if value is not None and required and not value:
            self.errors.add(join(self.path, key), "must not be empty")
        return value if value is not None else []

    def get_choice(self, key: str, choices: tuple[str, ...]) -> str:
        """One of ``choices`` (the default when absent); an unknown value is named with the choices."""
        value = self.get_str(key) or str(self.default(key))
        if value not in choices:
            self.errors.add(join(self.path, key), f"unknown value {value!r} (expected one of: {', '.join(choices)})")
        return value

    def read(self, minimums: Mapping[str, float] = {}, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """Every scalar key present, typed by its dataclass field (int, float, bool, str, optional float):
        the keyword arguments of that dataclass, whose own defaults fill the rest."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(type(self.defaults)):
            if f.name in skip or f.name not in self.data:
                continue
            typ, low = str(f.type), minimums.get(f.name)
            if typ == "int":
                out[f.name] = self.get_int(f.name, minimum=int(low or 0))
            elif typ in ("float", "float | None"):
                out[f.name] = self.get_float(f.name, 0.0 if typ != "float" else None, minimum=low or 0.0)
            elif typ == "bool":
                out[f.name] = self.get_bool(f.name)
            elif typ == "str":
                out[f.name] = self.get_str(f.name) or self.default(f.name)
        return out
