"""Text that is only shown: what may stand in a line on a terminal, and how a line that
may not is written so that it can. Without pydantic (the CLI checks a worker's answers with
it, and loads no models for that)."""

from __future__ import annotations

import unicodedata

# what no shown line may hold: control and format characters (a newline, an escape
# sequence, a bidi override), line and paragraph separators
HIDDEN = frozenset(("Cc", "Cf", "Zl", "Zp"))


def hidden(s: str) -> bool:
    """Whether `s` holds a character that would not show as itself (printable ASCII is
    answered without looking at each character's category)."""
    return (not s.isascii() or not s.isprintable()) and any(
        unicodedata.category(ch) in HIDDEN for ch in s)


def escape(text: str, limit: int = 2000) -> str:
    """`text` as one printable line: control and format characters (a newline, an escape
    sequence, a bidi override) written as \\x.. or \\u.... escapes; at most `limit` characters."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in HIDDEN or ch == "\\":
            out.append(ch.encode("unicode_escape").decode() if ch != "\\" else "\\\\")
        else:
            out.append(ch)
    line = "".join(out)
    return line if len(line) <= limit else line[: limit - 3] + "..."
