"""The package's import graph: no cycles anywhere in harness/, and the layers in order (a lower layer never
imports a higher one). grimp reads every import, function-level ones included."""

from __future__ import annotations

import grimp
import pytest

GRAPH = grimp.build_graph("harness")

# Lowest first. A module may import from its own layer or any layer before it, never from a later one.
LAYERS = (
    (
        "harness.errors",
        "harness.versions",
        "harness.serial",
        "harness.stats",
        "harness.convert_gguf",
        "harness.safe",
        "harness.stability",
        "harness.words",
    ),
    ("harness.backends",),
    ("harness.install",),
    ("harness.fingerprint", "harness.results"),
    (
        "harness.probes",
        "harness.load",
        "harness.index",
        "harness.launch",
        "harness.slots",
        "harness.catalogue",
        "harness.gpustack",
    ),
    (
        "harness.spec",
        "harness.models",
        "harness.recommend",
        "harness.verdict",
        "harness.history",
        "harness.releases",
        "harness.shards",
    ),
    ("harness.cell", "harness.report"),
    ("harness.plugin", "harness.__main__", "harness.bisection"),
)


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(GRAPH.modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle() -> None:
    assert _cycles() == []


def test_every_module_has_a_layer() -> None:
    layered = [p for layer in LAYERS for p in layer]
    missing = [m for m in GRAPH.modules if m != "harness" and not any(m == p or m.startswith(p + ".") for p in layered)]
    assert missing == []


@pytest.mark.parametrize("lower", range(len(LAYERS) - 1))
def test_layers_import_downwards_only(lower: int) -> None:
    higher = [p for layer in LAYERS[lower + 1 :] for p in layer]
    bad = []
    for low_pkg in LAYERS[lower]:
        for high_pkg in higher:
            chain = GRAPH.find_shortest_chain(importer=low_pkg, imported=high_pkg, as_packages=True)
            if chain:
                bad.append(" -> ".join(chain))
    assert bad == []


def test_no_module_beside_the_converter_shadows_the_standard_library() -> None:
    """convert_gguf.py runs as a script in another venv: its folder comes first on sys.path there, so a
    harness/bisect.py once replaced the stdlib's bisect for transformers, and conversion failed."""
    import sys
    from pathlib import Path

    import harness

    here = Path(harness.__file__).parent
    names = {p.stem for p in here.glob("*.py")} | {p.name for p in here.iterdir() if p.is_dir()}
    assert sorted(names & set(sys.stdlib_module_names)) == []
