"""What the CLI prints for people never carries live terminal or bidi controls."""

from __future__ import annotations

import io
import json

import pytest

from agent.output import SafeStream, cell, dump_json, safe_text

HOSTILE = [
    ("erase line", "ok\x1b[2K\x1b[1Arm -rf /", "\\x1b"),
    ("carriage return", "approved\rrejected", "\\x0d"),
    ("bidi override", "user\u202etxt.exe", "\\u202e"),
    ("bidi isolate", "a\u2066b\u2069", "\\u2066"),
    ("zero width", "ad\u200bmin", "\\u200b"),
    ("osc title", "\x1b]0;owned\x07", "\\x07"),
    ("c1 csi", "x\x9b31m", "\\x9b"),
]


@pytest.mark.parametrize(
    ("text", "shown"), [(t, s) for _, t, s in HOSTILE], ids=[n for n, *_ in HOSTILE]
)
def test_controls_and_bidi_are_shown_escaped(text: str, shown: str) -> None:
    out = safe_text(text)
    assert shown in out
    assert not any(ord(ch) < 32 and ch not in "\n\t" for ch in out)
    assert not any(0x7F <= ord(ch) <= 0x9F or 0x2000 <= ord(ch) <= 0x206F for ch in out)


def test_tab_newline_and_ordinary_unicode_are_kept() -> None:
    text = "line one\n\tindented — café ✓"
    assert safe_text(text) == text


def test_the_stream_and_table_cells_escape() -> None:
    inner = io.StringIO()
    SafeStream(inner).write("diff\n+ok\x1b[2K\n")
    assert inner.getvalue() == "diff\n+ok\\x1b[2K\n"
    assert cell("a\u202eb") == "a\\u202eb"


def test_json_carries_them_escaped_and_round_trips() -> None:
    out = io.StringIO()
    dump_json({"diff": "+x\x1b[2K\u202e"}, out=out)
    assert "\x1b" not in out.getvalue() and "\u202e" not in out.getvalue()
    assert json.loads(out.getvalue()) == {"diff": "+x\x1b[2K\u202e"}
