"""Command line: pin management without running cells.

    python -m harness install <backend> <version>... [--bin-dir DIR] [--data-dir DIR] [--pipx-path P] [--platform cpu]
                              [--installer pipx|uv] [--tools-download-base-url URL] [--allow-http-mirror]
    python -m harness install --matrix matrices/my.toml <version>...   # a matrix's backend, package, installer, indexes
    python -m harness pins [--bin-dir DIR] [--data-dir DIR]
    python -m harness schema [--write]     # the results JSON Schema the types describe
    python -m harness compare <run A> <run B> [--json]   # verdicts of B's cells against the same pins in A
    python -m harness report <run dir>... [--out DIR]    # reports again from stored results, runs merged (alias: merge)
    python -m harness bisect <matrix> --good V1 --bad V2 [--on throughput|agreement|accuracy|conformance]
    python -m harness cells <matrix> [--shards N] [--json]   # the cells, the GPUs each needs, the shard that runs it
    python -m harness gpustack-cleanup [--url URL] [--api-key-env VAR]   # what a killed run left on a GPUStack server

Every kind installs through the one entry point (``harness.install.install_pin``): pipx, uv, a verified
download (llama-box, custom backends with a ``download_url``), or a manual pin already in the bin dir.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import gpustack, releases
from .backends import Host, get_backend, known_backends
from .bisection import CRITERIA, SOURCES, bisect, budget
from .cell import cell_id
from .errors import HarnessError, InstallError
from .history import History
from .install import (
    DEFAULT_BASE_URL,
    InstallPaths,
    InstallRequest,
    default_data_dir,
    install_pin,
    list_pins,
    pipx_command,
)
from .report import first_screen, rebuild
from .results import SCHEMA_FILE, ResultStore, RunInfo, results_schema
from .safe import terminal
from .shards import plan
from .slots import cuda_driver_version, default_platform, discover_gpus
from .spec import load_matrix
from .verdict import compare_runs
from .versions import InvalidPin, parse_pin
from .words import TrendWord


def _paths(a: argparse.Namespace) -> InstallPaths:
    data = Path(a.data_dir).expanduser() if a.data_dir else default_data_dir()
    bin_dir = Path(a.bin_dir).expanduser() if a.bin_dir else data / "bin"
    return InstallPaths(
        data_dir=data.resolve(), bin_dir=bin_dir.resolve(), pipx=pipx_command(getattr(a, "pipx_path", None))
    )


def _request(a: argparse.Namespace) -> Callable[..., InstallRequest]:
    """How to ask for one version: what a matrix (or the flags) say about backend, platform, package, indexes."""
    platform = a.platform or default_platform(discover_gpus())
    host = Host.detect(
        cuda_driver_version() if platform == "cuda" else None
    )  # llama-box's asset follows the driver's CUDA
    common = {
        "platform": platform,
        "download_base_url": a.tools_download_base_url,
        "allow_http": a.allow_http_mirror,
        "host": host,
    }
    if a.matrix:
        matrix = load_matrix(a.matrix)
        if platform not in matrix.platforms:
            raise HarnessError(f"{a.matrix}: no '{platform}' platform (has: {', '.join(matrix.platforms)})")
        plat = matrix.platforms[platform]
        return functools.partial(
            InstallRequest,
            backend=matrix.get_backend(),
            package=a.package or plat.package,
            installer=a.installer or plat.installer,
            extra_index_urls=plat.extra_index_urls or None,
            **common,
        )
    if not a.backend:
        raise HarnessError(f"name a backend ({', '.join(known_backends())}) or a --matrix")
    return functools.partial(
        InstallRequest,
        backend=get_backend(a.backend),
        package=a.package or "",
        installer=a.installer or "pipx",
        **common,
    )


def cmd_install(a: argparse.Namespace) -> int:
    if a.matrix and a.backend:  # with --matrix every positional is a version
        a.versions, a.backend = [a.backend, *a.versions], None
    request = _request(a)
    paths, failed = _paths(a), 0
    name = a.backend or Path(a.matrix).stem
    for text in a.versions:

        def progress(message: str, version: str = text) -> None:
            print(f"[{name} {version}] {message}", flush=True)

        try:
            rec = install_pin(request(pin=parse_pin(text)), paths, progress=progress)
        except (InvalidPin, InstallError) as exc:
            print(f"[{name} {text}] FAILED: {exc}", file=sys.stderr)
            failed += 1
            continue
        state = "installed" if rec.installed_now else "already installed"
        extra = f", sha256 {rec.sha256}" if rec.sha256 else ""
        print(f"{rec.executable}  ({state}, {rec.kind}, {rec.seconds:.1f} s, {rec.size_bytes / 2**30:.2f} GiB{extra})")
    return 1 if failed else 0


def cmd_pins(a: argparse.Namespace) -> int:
    paths = _paths(a)
    rows = list_pins(paths)
    if not rows:
        print(f"no pins in {paths.bin_dir}")
    for row in rows:
        print(f"{row.backend:<12} {row.version:<16} {row.origin:<9} {row.path}")
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    """The verdict of each cell of run B against the same pin in run A (two nights, two machines of one kind)."""
    runs = []
    for run in (Path(a.before), Path(a.after)):
        if not (run / "results.jsonl").is_file():
            raise HarnessError(f"{run}: no results.jsonl (not a run directory)")
        runs.append(ResultStore(run / "results.jsonl").load())
    found = compare_runs(
        runs[0], runs[1], names=(Path(a.before).name, Path(a.after).name), noise=a.noise, drift=a.drift
    )
    if a.json:
        print(json.dumps([v.to_dict() for v in found], indent=1))
    else:
        for v in found:
            print(terminal(v.line))
        if not found:
            print("no cell of the second run has a measured counterpart in the first")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    """Reports from stored results: one run dir again, or several (shards, re-runs) merged into one."""
    dirs = [Path(d) for d in a.run_dirs]
    out = Path(a.out) if a.out else (dirs[0].parent / "merged" if len(dirs) > 1 else None)
    data_dir = Path(a.data_dir) if a.data_dir else default_data_dir()
    history = None if a.no_history else (Path(a.history) if a.history else data_dir / "history")
    matrix = load_matrix(a.matrix) if a.matrix else None
    paths, recs, notes = rebuild(dirs, out, matrix=matrix, history=history)
    for note in notes:
        print(terminal(f"note: {note}"))
    for rec in recs:
        print(terminal(f"recommended pin for {rec.where}: {rec.backend} {rec.headline}"))
        for reason in rec.reasons:
            print(terminal(f"  - {reason}"))
    for label, path in (
        ("markdown", paths.markdown),
        ("html", paths.html),
        ("results", paths.results_json),
        ("pins", paths.pins_json),
    ):
        print(f"{label:>9}: {path}")
    if step_summary := os.environ.get("GITHUB_STEP_SUMMARY"):  # a CI job's summary page shows the first screen
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(first_screen(paths.markdown.read_text(encoding="utf-8")) + "\n")
    deployed = set(RunInfo.read(paths.run_dir).references.values())
    regressed = [t for t in paths.trends if t.word is TrendWord.REGRESSION and t.version in deployed]
    for t in regressed:
        print(terminal(f"regression of the deployed pin: {t.line}"), file=sys.stderr)
    return 1 if a.fail_on_regression and regressed else 0


def cmd_bisect(a: argparse.Namespace) -> int:
    """The first bad release between a good and a bad pin, in at most ceil(log2(n)) + 1 cells."""
    matrix = load_matrix(a.matrix)
    platform = a.platform or default_platform(discover_gpus())
    outcome, run_dir = bisect(
        matrix,
        platform,
        good=a.good,
        bad=a.bad,
        on=a.on,
        paths=_paths(a),
        reports_dir=Path(a.reports_dir),
        model=a.model,
        source=a.versions_from,
        verify_bad=a.verify_bad,
        download_base_url=a.tools_download_base_url,
        allow_http_mirror=a.allow_http_mirror,
        progress=lambda m: print(terminal(m), flush=True),
    )
    print(terminal(outcome.line))
    print(
        f"{outcome.cells_run} cells (budget {budget(len(outcome.releases))}); "
        f"evidence: {run_dir / 'bisect.json'}, {run_dir / 'report.md'}"
    )
    return 0 if outcome.first_bad else 3


def cmd_cells(a: argparse.Namespace) -> int:
    """The matrix's cells for a fleet: id, GPUs needed, and which of ``--shards`` runs it (``pytest --shard i/n``)."""
    if a.shards < 1:
        raise HarnessError(f"--shards {a.shards}: expected 1 or more")
    matrix = load_matrix(a.matrix)
    platform = a.platform or default_platform(discover_gpus())
    if platform not in matrix.platforms:
        raise HarnessError(f"{a.matrix}: no '{platform}' platform (has: {', '.join(matrix.platforms)})")
    paths = _paths(a)
    matrix = releases.resolve(matrix, platform, paths=paths, download_base_url=a.tools_download_base_url)
    plat = matrix.platforms[platform]
    backend = matrix.get_backend().name
    ids = {
        (p.pin.text, m.name, v.name): cell_id(backend, p.pin.text, m.name, platform, v.name)
        for m in plat.models
        for v in plat.variants
        for p in plat.versions
    }
    history = None if a.no_history else (Path(a.history) if a.history else paths.data_dir / "history")
    costs = History(history).costs(matrix.backend, platform) if history is not None else {}
    planned = plan(matrix, platform, ids, shards=a.shards, costs=costs)
    if a.json:
        print(json.dumps([p.to_dict() for p in planned], indent=1))
        return 0
    for p in planned:
        shards = ",".join(map(str, p.shards))
        print(f"{p.cell_id:<60} shard {shards:<8} gpus {p.gpus}  {'reference' if p.reference else ''}")
    return 0


def cmd_schema(a: argparse.Namespace) -> int:
    """Print the results JSON Schema the types describe, or write it where the package ships it."""
    text = json.dumps(results_schema(), indent=1) + "\n"
    if a.write:
        SCHEMA_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_gpustack_cleanup(a: argparse.Namespace) -> int:
    """Delete the models a killed run left on a GPUStack server (only those its ledger recorded)."""
    data_dir = Path(a.data_dir).expanduser() if a.data_dir else default_data_dir()
    ledger = gpustack.Ledger(data_dir)
    urls = [a.url.rstrip("/")] if a.url else sorted({e["url"] for e in ledger.entries()})
    for url in urls:
        client = gpustack.Client(url, gpustack.api_key(a.api_key_env, url), verify=not a.insecure)
        try:
            deleted = gpustack.cleanup(ledger, client)
        finally:
            client.close()
        for what in deleted:
            print(f"deleted {what} from {url}")
        if not deleted:
            print(f"nothing left on {url}")
    return 0


def _install_parsers(sub: Any) -> None:
    for name in ("install", "pins"):
        p = sub.add_parser(name)
        p.add_argument("--bin-dir")
        p.add_argument("--data-dir")
        if name == "install":
            p.add_argument("backend", nargs="?", help=f"one of: {', '.join(known_backends())} (or give --matrix)")
            p.add_argument("versions", nargs="*")
            p.add_argument(
                "--matrix",
                help="take the backend (a [custom] one too), package, installer and indexes from a matrix file",
            )
            p.add_argument("--pipx-path")
            p.add_argument("--platform", choices=("cpu", "cuda"))
            p.add_argument("--package", help="PyPI package (default: the matrix's or the backend flavour's)")
            p.add_argument(
                "--installer", choices=("pipx", "uv"), help="for package backends (default: the matrix's, else pipx)"
            )
            p.add_argument(
                "--tools-download-base-url",
                default=DEFAULT_BASE_URL,
                help="mirror for prebuilt backends (GPUStack's option)",
            )
            p.add_argument("--allow-http-mirror", action="store_true", help="allow a plain-http download mirror")


def _compare_parser(sub: Any) -> None:
    cmp = sub.add_parser("compare", help="verdicts of run B's cells against the same pins in run A")
    cmp.add_argument("before", help="a run directory (reports/<backend>/<run-id>)")
    cmp.add_argument("after", help="a later run directory")
    cmp.add_argument(
        "--noise", type=float, default=0.05, help="differences inside this fraction are none (default 0.05)"
    )
    cmp.add_argument(
        "--drift", type=float, default=0.10, help="machine speed change that makes a difference 'machine unstable'"
    )
    cmp.add_argument("--json", action="store_true", help="the verdicts as JSON")


def _bisect_parser(sub: Any) -> None:
    bis = sub.add_parser("bisect", help="the first bad release between a good and a bad pin")
    bis.add_argument("matrix", help="the matrix file (its backend, package, model, workload, thresholds)")
    bis.add_argument("--good", required=True, help="a release that is good (runs first, as the reference)")
    bis.add_argument("--bad", required=True, help="a later release that is bad")
    bis.add_argument(
        "--on", default="throughput", choices=CRITERIA, help="what makes a release bad (default: throughput)"
    )
    bis.add_argument("--model", help="which of the platform's models (default: its first)")
    bis.add_argument("--platform", choices=("cpu", "cuda"))
    bis.add_argument(
        "--versions-from",
        default="index",
        choices=SOURCES,
        help="the releases between: from the package index / release list, or the pins installed in the bin dir",
    )
    bis.add_argument("--verify-bad", action="store_true", help="run the bad pin too, and stop if it is not bad")
    bis.add_argument("--reports-dir", default="reports")
    for opt in ("--bin-dir", "--data-dir", "--pipx-path"):
        bis.add_argument(opt)
    bis.add_argument("--tools-download-base-url", default=DEFAULT_BASE_URL)
    bis.add_argument("--allow-http-mirror", action="store_true")


def _cells_parser(sub: Any) -> None:
    cel = sub.add_parser("cells", help="the matrix's cells, the GPUs each needs and the shard that runs it")
    cel.add_argument("matrix")
    cel.add_argument("--platform", choices=("cpu", "cuda"))
    cel.add_argument("--shards", type=int, default=1, help="how many shards the fleet runs (pytest --shard i/N)")
    cel.add_argument("--json", action="store_true")
    for opt in ("--bin-dir", "--data-dir", "--history"):
        cel.add_argument(opt)
    cel.add_argument("--no-history", action="store_true", help="balance shards by count, not by history's cell times")
    cel.add_argument("--tools-download-base-url", default=DEFAULT_BASE_URL)


def _report_parsers(sub: Any) -> None:
    rep = sub.add_parser(
        "report", aliases=["merge"], help="reports again from stored results; several run dirs merged into one"
    )
    rep.add_argument("run_dirs", nargs="+", help="run directories (reports/<backend>/<run-id>) of one matrix")
    rep.add_argument(
        "--out", help="where the merged report goes (default: <first run's parent>/merged; one run: in place)"
    )
    rep.add_argument("--matrix", help="the matrix, for runs without run.json (older runs)")
    rep.add_argument("--data-dir", help="its history dir is the default history")
    rep.add_argument(
        "--history", help="compare each cell with its earlier runs there, and add it (default: <data-dir>/history)"
    )
    rep.add_argument("--no-history", action="store_true", help="neither compare with nor add to history")
    rep.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when the deployed (reference) pin is a regression against its own history (a nightly's gate)",
    )
    sub.add_parser("schema", help="the results JSON Schema (results.json, results.jsonl lines)").add_argument(
        "--write", action="store_true", help=f"write it to {SCHEMA_FILE.name} in the package"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness", description="Pin management for GPUStack bin dirs.")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (_install_parsers, _compare_parser, _bisect_parser, _cells_parser, _report_parsers):
        add(sub)
    gc = sub.add_parser("gpustack-cleanup", help="delete the models a killed run left on a GPUStack server")
    gc.add_argument("--data-dir", help="whose ledger (default: $PINMATRIX_DATA_DIR or ~/.cache/pinmatrix)")
    gc.add_argument("--url", help="the GPUStack server (default: every server the ledger names)")
    gc.add_argument("--api-key-env", default="GPUSTACK_API_KEY", help="the variable holding the API key")
    gc.add_argument("--insecure", action="store_true", help="do not verify the server's TLS certificate")
    a = ap.parse_args(argv)
    if a.command == "install" and not (a.versions or (a.matrix and a.backend)):
        ap.error("install: name at least one version")
    commands = {
        "install": cmd_install,
        "pins": cmd_pins,
        "compare": cmd_compare,
        "schema": cmd_schema,
        "report": cmd_report,
        "merge": cmd_report,
        "bisect": cmd_bisect,
        "cells": cmd_cells,
        "gpustack-cleanup": cmd_gpustack_cleanup,
    }
    try:
        return commands[a.command](a)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
