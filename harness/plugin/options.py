"""The plugin's options and where they point: the data dir, the bin dir, history, the run dir; and the
values a run keeps in pytest's stash."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ..install import InstallPaths, default_data_dir, pipx_command
from ..spec import Matrix

MATRICES = pytest.StashKey[dict[str, Matrix]]()  # backend -> its matrix, version sets resolved
EXPECTED = pytest.StashKey[dict[str, list[str]]]()  # backend -> the cell ids this run is to run
REAPED = pytest.StashKey[bool]()  # servers a killed run left behind: stopped once per run
ALL_CELLS = pytest.StashKey[dict[str, list[str]]]()  # backend -> every cell id collected, before --shard
PREPARED = pytest.StashKey[dict[str, str]]()  # executable -> how it was installed ahead of the cells


def add_options(parser: pytest.Parser) -> None:
    g = parser.getgroup("pinmatrix", "pinned backend version matrix")
    g.addoption(
        "--data-dir",
        dest="pm_data_dir",
        default=None,
        help="pipx home, models, logs (default: $PINMATRIX_DATA_DIR or ~/.cache/pinmatrix)",
    )
    g.addoption(
        "--bin-dir",
        dest="pm_bin_dir",
        default=None,
        help="GPUStack bin dir for <backend>_<version> (default: <data-dir>/bin)",
    )
    g.addoption(
        "--pipx-path", dest="pm_pipx_path", default=None, help="pipx executable (default: pipx on PATH, else bundled)"
    )
    g.addoption(
        "--platform",
        dest="pm_platform",
        default=None,
        help="platform to run: cpu, cuda, or a GPUStack platform of the matrix (default: cuda when an NVIDIA GPU "
        "is found, else cpu; a matrix whose only platform is a GPUStack one runs that)",
    )
    _run_options(g)


def _run_options(g: pytest.OptionGroup) -> None:
    g.addoption("--reports-dir", dest="pm_reports_dir", default="reports", help="where reports/<backend>/<run-id>/ go")
    g.addoption("--run-id", dest="pm_run_id", default=None, help="run id (default: UTC timestamp)")
    g.addoption(
        "--tools-download-base-url",
        dest="pm_download_base",
        default="https://github.com",
        help="mirror for prebuilt backends (GPUStack's option; default https://github.com)",
    )
    g.addoption(
        "--allow-http-mirror", dest="pm_allow_http", action="store_true", help="allow a plain-http download mirror"
    )
    g.addoption(
        "--history",
        dest="pm_history",
        default=None,
        help=(
            "history dir: each cell is compared with its own earlier "
            "runs there, then added (default: <data-dir>/history)"
        ),
    )
    g.addoption(
        "--no-history", dest="pm_no_history", action="store_true", help="neither compare with nor add to history"
    )
    g.addoption(
        "--shard",
        dest="pm_shard",
        default=None,
        help="run shard i of n (i/n): deterministic, balanced by history's cell times; merge with `harness report`",
    )
    g.addoption(
        "--remove-venvs",
        dest="pm_remove_venvs",
        action="store_true",
        help="delete each pin's pipx/uv venv after its last cell (vox-box venvs are 7 GiB; cells run pin by pin)",
    )
    g.addoption(
        "--gpustack-url",
        dest="pm_gpustack_url",
        default=None,
        help="run the matrix's GPUStack platform against this server instead of the one it names",
    )


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def data_dir(config: pytest.Config) -> Path:
    opt = config.option
    return Path(opt.pm_data_dir).expanduser() if opt.pm_data_dir else default_data_dir()


def install_paths(config: pytest.Config, *, resolve: bool = True) -> InstallPaths:
    """The GPUStack layout the run installs into (``resolve=False``: as given, with plain ``pipx``)."""
    opt = config.option
    data = data_dir(config)
    bin_dir = Path(opt.pm_bin_dir).expanduser() if opt.pm_bin_dir else data / "bin"
    if not resolve:
        return InstallPaths(data_dir=data, bin_dir=bin_dir, pipx=("pipx",))
    return InstallPaths(data_dir=data.resolve(), bin_dir=bin_dir.resolve(), pipx=pipx_command(opt.pm_pipx_path))


def history_dir(config: pytest.Config) -> Path | None:
    opt = config.option
    if opt.pm_no_history:
        return None
    if opt.pm_history:
        return Path(opt.pm_history).expanduser().resolve()
    return data_dir(config).resolve() / "history"


def run_dir(config: pytest.Config, backend: str) -> Path:
    return Path(config.option.pm_reports_dir).resolve() / backend / str(config.option.pm_run_id)
