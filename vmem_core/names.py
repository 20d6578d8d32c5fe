"""Text that users give vmem: labels and the names of uploaded files.

Labels are stored and shown as given (any script, quotes, semicolons: the database only ever sees them as bound
parameters), normalised to NFC so that the same word typed on two keyboards is one class. Control characters are
rejected, not stripped: a label that silently changed would merge or split classes behind the user's back, and a
newline or escape sequence would break the CLI's one-line output. Upload names come from the browser and are only
ever recorded, never used as paths: they keep their last path component, printable characters only.
"""

from __future__ import annotations

import unicodedata

from .errors import VmemError

# Unicode category -> what the error calls it. Line and paragraph separators count: str.splitlines() and many
# viewers break lines there, so a label holding one would not be one line.
UNPRINTABLE = {
    "Cc": "control character",  # tab, newline, NUL, escape, C1
    "Cs": "lone surrogate",
    "Zl": "line separator",
    "Zp": "paragraph separator",
}


class BadLabelError(VmemError):
    """A label is empty or holds characters a label cannot have."""


def check_label(label: object) -> str:
    """The label as stored: surrounding whitespace removed, NFC-normalised; BadLabelError if empty or unprintable."""
    text = unicodedata.normalize("NFC", str(label).strip()) if isinstance(label, str) else str(label).strip()
    if not text:
        raise BadLabelError("empty label; every exemplar needs a non-empty label")
    for position, char in enumerate(text):
        kind = UNPRINTABLE.get(unicodedata.category(char))
        if kind is not None:
            raise BadLabelError(
                f"label {text!r} has {kind} U+{ord(char):04X} at position {position}; a label is one "
                "line of printable text (letters of any script, digits, spaces, punctuation)"
            )
    return text


def upload_name(name: object) -> str:
    """A browser-supplied file name made harmless to record and show: its last path component, printable only."""
    text = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if unicodedata.category(c) not in UNPRINTABLE).strip()
    return text if text not in ("", ".", "..") else "upload"
