"""Values as text for people: paths and counts in messages, shared by the CLI and the
engine (whose errors and warnings the CLI prints as they are).

Pure functions, no I/O. A path in a message is never a bytes repr (b'...'): use
`display_path`; a count is never "1 files": use `plural`.
"""

from __future__ import annotations

import os

# Nouns whose plural is not noun + "s".
_PLURALS = {"entry": "entries", "directory": "directories", "is": "are"}


def display_path(path: bytes | str) -> str:
    """A path for a terminal: undecodable bytes and control characters made visible."""
    text = os.fsdecode(path)
    if text.isprintable():
        return text
    return text.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace") \
        .replace("\n", "\\n").replace("\t", "\\t")


def plural(n: int, noun: str, many: str | None = None) -> str:
    """'1 file', '2 files', '1,024 entries': the count with thousands separators and the
    noun in the number it takes (`many` when its plural is irregular and not known here)."""
    if n == 1:
        return f"1 {noun}"
    return f"{n:,} {many or _PLURALS.get(noun) or noun + 's'}"
