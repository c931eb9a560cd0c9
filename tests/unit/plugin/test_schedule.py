"""The plugin's scheduling, without pytest items: the order cells run in, a cell waiting for its reference
cell's result on another worker, and -n auto's worker count."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from harness.cell import RunContext
from harness.install import InstallPaths
from harness.plugin.items import cell_order
from harness.plugin.schedule import auto_workers, wait_for_reference
from harness.results import CellResult, ResultStore, Status
from harness.slots import Slot
from harness.spec import parse_matrix
from tests.support.cells import cell

HERE = Path(__file__).resolve()


def _platform(variants: list[dict[str, object]] | None = None):  # type: ignore[no-untyped-def]
    models = [{"name": n, "source": f"file://{HERE}"} for n in ("a", "b")]
    cpu: dict[str, object] = {"versions": ["0.32.0", "0.31.0"], "reference": "0.31.0", "models": models}
    if variants:
        cpu["variants"] = variants
    return parse_matrix({"backend": "vllm", "platforms": {"cpu": cpu}}, "m.toml").platforms["cpu"]


def _names(order) -> list[str]:  # type: ignore[no-untyped-def]
    return [f"{m.name}:{p.pin.text}{':' + v.name if v.name else ''}" for m, p, v in order]


def test_model_by_model_with_the_reference_pin_first() -> None:
    assert _names(cell_order(_platform(), pin_by_pin=False)) == ["a:0.31.0", "a:0.32.0", "b:0.31.0", "b:0.32.0"]


def test_pin_by_pin_when_venvs_are_removed() -> None:
    assert _names(cell_order(_platform(), pin_by_pin=True)) == ["a:0.31.0", "b:0.31.0", "a:0.32.0", "b:0.32.0"]


def test_a_variant_compared_with_another_runs_after_that_variants_reference() -> None:
    plat = _platform([{"name": "fast"}, {"name": "slow", "reference_variant": "fast"}])
    order = _names(cell_order(plat, pin_by_pin=False))
    assert order.index("a:0.31.0:fast") < order.index("a:0.31.0:slow") < order.index("b:0.31.0:fast")
    assert order[0] == "a:0.31.0:fast"


_CPU = {"versions": ["0.31.0"], "reference": "0.31.0", "models": [{"name": "m", "source": f"file://{HERE}"}]}


def _ctx(tmp_path: Path, said: list[str]) -> RunContext:
    return RunContext(
        matrix=parse_matrix({"backend": "vllm", "platforms": {"cpu": _CPU}}, "m.toml"),
        platform="cpu",
        paths=InstallPaths(data_dir=tmp_path, bin_dir=tmp_path, pipx=("pipx",)),
        run_dir=tmp_path,
        slot=Slot(platform="cpu"),
        progress=said.append,
    )


def test_waiting_for_the_reference_cell_ends_when_its_result_is_final(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "results.jsonl")
    said: list[str] = []
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the other worker records the reference cell while we wait
        slept.append(seconds)
        ref: CellResult = cell("0.31.0", reference=True, status=Status.PASSED)
        ref.cell_id = "ref"
        store.append(ref)

    wait_for_reference("ref", store, _ctx(tmp_path, said), limit_s=60, sleep=sleep)
    assert slept == [1.0] and said == ["waiting for the reference cell ref (another worker runs it)"]


def test_giving_up_on_the_reference_cell_says_so(tmp_path: Path) -> None:
    said: list[str] = []
    store = ResultStore(tmp_path / "results.jsonl")
    wait_for_reference("ref", store, _ctx(tmp_path, said), limit_s=-1, sleep=lambda s: None)
    assert said == ["gave up waiting for the reference cell ref: running without its outputs"]


def test_auto_workers_is_one_on_the_cpu() -> None:
    matrix = Path(__file__).resolve().parents[3] / "matrices" / "vllm.toml"
    config = SimpleNamespace(args=[str(matrix)], option=SimpleNamespace(pm_platform="cpu"))
    assert auto_workers(config) == 1  # type: ignore[arg-type]
    assert auto_workers(SimpleNamespace(args=["tests"], option=SimpleNamespace(pm_platform=None))) is None  # type: ignore[arg-type]
