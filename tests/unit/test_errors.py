"""errors.py draws the whole exception tree: every HarnessError subclass in the package is in its docstring."""

from __future__ import annotations

import importlib
import pkgutil

import harness
from harness import errors


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub, *_subclasses(sub)}
    return out


def test_every_harness_error_is_in_the_drawn_tree() -> None:
    for mod in pkgutil.walk_packages(harness.__path__, "harness."):
        if mod.name != "harness.__main__":
            importlib.import_module(mod.name)
    drawn = errors.__doc__ or ""
    missing = sorted(c.__name__ for c in _subclasses(errors.HarnessError) if c.__module__.startswith("harness"))
    assert [name for name in missing if f" {name} " not in drawn] == []
