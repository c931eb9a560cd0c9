"""Text from servers, models and matrices made safe for the sink it goes to.

A server's log line, an answer or an error message is data, never markup or a terminal command:

- ``terminal``: control characters (escape sequences that clear the screen, set the window title or
  colour the text; C1 controls; DEL) are shown as ``\\x1b``-style escapes, and a newline as ``\\n``;
- ``markdown_text``: HTML-escaped (no raw tags) and Markdown punctuation backslash-escaped (no links,
  emphasis, headings or table cells a payload could open), control characters shown escaped;
- ``fence``: a code fence longer than any backtick run in the text, so a log line cannot close it;
- ``visible_controls``: control characters shown escaped, for HTML (jinja2 autoescapes the rest).
"""

from __future__ import annotations

import html
import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps \t and \n (the callers decide about \n)
# What makes inline markup out of text: code spans, links/images, table cells, escapes. (< > & are
# HTML-escaped; emphasis markers are left alone: they cannot run anything and escaping them everywhere
# would make the raw report unreadable.)
# A "]" opens a link only right before "(", "[" or ":" (inline, reference, definition): escaped there, so
# ordinary brackets stay readable in the raw file.
_MD_PUNCT = re.compile(r"([\\`|]|\](?=[(\[:]))")
# a heading, list item or rule a line would otherwise open
_MD_BLOCK_START = re.compile(r"^(\s*)(#{1,6}|[+\-*]|[=\-_*]{3,})(?=\s|$)")
_MD_ORDERED = re.compile(r"^(\s*\d{1,9})([.)])(?=\s|$)")  # "1. " opens a list: its "." is what gets escaped


def _escape_control(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group(0)):02x}"


def visible_controls(text: str) -> str:
    return _CONTROL.sub(_escape_control, text)


def terminal(text: str) -> str:
    """One line for a terminal: escapes shown, never obeyed."""
    return visible_controls(text).replace("\n", "\\n")


def markdown_text(text: str) -> str:
    """Inline Markdown that renders as exactly this text (no HTML, no markup), on one line."""
    escaped = _MD_PUNCT.sub(r"\\\1", html.escape(visible_controls(text), quote=False)).replace("\n", " ")
    escaped = _MD_ORDERED.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)
    return _MD_BLOCK_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped)


def fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text`` (CommonMark closes on an equal one)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


_NUMBER_TAIL = re.compile(r"[\w.+-]*\d[\w.+-]*$")


def shorten(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters for a summary: at a word boundary, with an ellipsis, and
    never inside a number ("exact McNemar p=1.3e-19" is never shown as "p=1")."""
    if len(text) <= width:
        return text
    head = text[: width - 1]
    cut = head.rsplit(None, 1)[0] if " " in head.strip() else head
    if cut == head and text[width - 1 : width].strip():  # one long word: keep no broken number at its end
        cut = _NUMBER_TAIL.sub("", cut) or cut
    return cut.rstrip(" ,;:(") + "…"
