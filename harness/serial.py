"""Typed records to JSON and back, and their JSON Schema, from the dataclasses' own type hints.

One mechanism for every record the harness writes (results, fingerprints, install records): ``dump``
turns a frozen dataclass into JSON-ready data (tuples become lists, enums their values, NaN/inf None);
``load`` builds it back and names the path of anything wrong ("cells[2].throughput[0].runs[1].rate:
expected number, got 'fast'"); ``schema`` derives the JSON Schema the package ships. A union of
records is told apart by their ``kind`` field (a ``Literal``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

T = TypeVar("T")


class LoadError(ValueError):
    """Data that does not fit the record type; the message starts with the path."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(cls: type) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.init]


def dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump(getattr(value, f.name)) for f in _fields(type(value))}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): dump(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    return value


def _is_record(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _kind_of(cls: type) -> str | None:
    hint = _hints(cls).get("kind")
    return str(get_args(hint)[0]) if hint is not None and get_origin(hint) is Literal else None


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def load(tp: Any, data: Any, path: str = "") -> Any:
    """``data`` as an instance of ``tp``; LoadError naming the path of the first misfit."""
    where = path or "(top)"
    origin = get_origin(tp)
    if tp is Any:
        return data
    if _is_union(tp):
        return _load_union(tp, data, path)
    if origin is Literal:
        if data not in get_args(tp):
            raise LoadError(f"{where}: expected one of {list(get_args(tp))}, got {data!r:.80}")
        return data
    if _is_record(tp):
        return _load_record(tp, data, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(data)
        except ValueError:
            raise LoadError(f"{where}: expected one of {[m.value for m in tp]}, got {data!r:.80}") from None
    if origin in (tuple, list, Sequence):
        return _load_sequence(tp, data, path)
    if origin in (dict, Mapping):
        if not isinstance(data, Mapping):
            raise LoadError(f"{where}: expected an object, got {data!r:.80}")
        _, value_tp = get_args(tp) or (str, Any)
        return {str(k): load(value_tp, v, _join(path, str(k))) for k, v in data.items()}
    return _load_scalar(tp, data, where)


def _load_union(tp: Any, data: Any, path: str) -> Any:
    """A record union is chosen by its ``kind``; any other union by the first option that loads."""
    options = get_args(tp)
    if data is None and type(None) in options:
        return None
    records: list[type] = [o for o in options if _is_record(o)]
    if records and isinstance(data, Mapping):
        by_kind = {_kind_of(o): o for o in records}
        chosen = by_kind.get(data.get("kind")) if len(records) > 1 else records[0]
        if chosen is None:
            known = ", ".join(map(str, by_kind))
            raise LoadError(f"{path or '(top)'}: unknown kind {data.get('kind')!r} (expected one of: {known})")
        return load(chosen, data, path)
    for o in options:
        if o is type(None):
            continue
        try:
            return load(o, data, path)
        except LoadError:
            continue
    expected = " or ".join(_describe(o) for o in options)
    raise LoadError(f"{path or '(top)'}: expected {expected}, got {data!r:.80}")


def _load_record(tp: Any, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise LoadError(f"{path or '(top)'}: expected an object, got {data!r:.80}")
    hints, kwargs = _hints(tp), {}
    names = {f.name for f in _fields(tp)}
    for key in data:
        if key not in names:
            raise LoadError(f"{_join(path, key)}: unknown field (expected one of: {', '.join(sorted(names))})")
    for f in _fields(tp):
        if f.name in data:
            kwargs[f.name] = load(hints[f.name], data[f.name], _join(path, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise LoadError(f"{_join(path, f.name)}: missing")
    return tp(**kwargs)


def _load_sequence(tp: Any, data: Any, path: str) -> Any:
    if not isinstance(data, list | tuple):
        raise LoadError(f"{path or '(top)'}: expected an array, got {data!r:.80}")
    origin, args = get_origin(tp), get_args(tp)
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(data) != len(args):
            raise LoadError(f"{path or '(top)'}: expected {len(args)} items, got {len(data)}")
        return tuple(load(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, data, strict=True)))
    item = args[0] if args else Any
    items = [load(item, v, f"{path}[{i}]") for i, v in enumerate(data)]
    return items if origin is list else tuple(items)


def _load_scalar(tp: Any, data: Any, where: str) -> Any:
    if tp is float:
        if data is None:  # NaN/inf were written as null: a missing figure reads as missing
            return math.nan
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise LoadError(f"{where}: expected number, got {data!r:.80}")
        return float(data)
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise LoadError(f"{where}: expected integer, got {data!r:.80}")
        return data
    if tp is str or tp is bool:
        if not isinstance(data, tp):
            raise LoadError(f"{where}: expected {tp.__name__}, got {data!r:.80}")
        return data
    if tp is type(None):
        if data is not None:
            raise LoadError(f"{where}: expected null, got {data!r:.80}")
        return None
    raise TypeError(f"{where}: no loader for {tp!r}")


def load_record(cls: type[T], data: Any, path: str = "") -> T:
    """``load`` for one record class, typed as that class."""
    return typing.cast(T, load(cls, data, path))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def schema(tp: Any, defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``tp``; records go to ``$defs`` by class name."""
    top = defs is None
    defs = {} if defs is None else defs
    out = _schema(tp, defs)
    if top:
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", **out, "$defs": dict(sorted(defs.items()))}
    return out


def _schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if tp is Any:
        return {}
    if _is_union(tp):
        return {"anyOf": [_schema(o, defs) for o in get_args(tp)]}
    origin = get_origin(tp)
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if _is_record(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # recursion guard
            hints = _hints(tp)
            props = {f.name: _schema(hints[f.name], defs) for f in _fields(tp)}
            required = [
                f.name
                for f in _fields(tp)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ]
            defs[name] = {"type": "object", "properties": props, "required": required, "additionalProperties": False}
            if tp.__doc__ and not tp.__doc__.startswith(f"{name}("):
                defs[name]["description"] = " ".join(tp.__doc__.split())
        return {"$ref": f"#/$defs/{name}"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [m.value for m in tp]}
    if origin in (tuple, list, Sequence):
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return {
                "type": "array",
                "prefixItems": [_schema(a, defs) for a in args],
                "minItems": len(args),
                "maxItems": len(args),
            }
        return {"type": "array", "items": _schema(args[0], defs) if args else {}}
    if origin in (dict, Mapping):
        args = get_args(tp)
        return {"type": "object", "additionalProperties": _schema(args[1], defs) if args else {}}
    if tp is float:
        return {"type": ["number", "null"]}  # NaN/inf are written as null
    simple = {int: "integer", str: "string", bool: "boolean", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"no schema for {tp!r}")
