"""Text that users give vmem: labels and the names of uploaded files.

Labels are stored and shown as given (any script, quotes, semicolons: the database only ever sees them as bound
parameters), normalised to NFC so that the same word typed on two keyboards is one class. Control characters are
rejected, not stripped: a label that silently changed would merge or split classes behind the user's back, and a
newline or escape sequence would break the CLI's one-line output. So are invisible format characters (bidi overrides,
zero-width spaces, BOMs), which make two labels that look identical differ, except the zero-width (non-)joiners that
Persian, Indic scripts and emoji sequences need. Upload names come from the browser and are only
ever recorded, never used as paths: they keep their last path component, printable characters only.
"""

from __future__ import annotations

import unicodedata
from typing import Optional

from ..errors import VmemError

# Unicode category -> what the error calls it. Line and paragraph separators count: str.splitlines() and many
# viewers break lines there, so a label holding one would not be one line.
UNPRINTABLE = {
    "Cc": "control character",  # tab, newline, NUL, escape, C1
    "Cs": "lone surrogate",
    "Zl": "line separator",
    "Zp": "paragraph separator",
    "Cf": "invisible format character",  # U+202E RIGHT-TO-LEFT OVERRIDE, U+200B ZERO WIDTH SPACE, U+FEFF, ...
}
# Format characters that change how the text around them is written, not only how it is displayed: U+200C keeps
# Persian or Indic letters apart that would join (a different spelling), U+200D joins emoji into one (woman + microscope
# = woman scientist, families). Refusing them would refuse real words.
JOINERS = {"\u200c", "\u200d"}


class BadLabelError(VmemError):
    """A label is empty or holds characters a label cannot have."""


MAX_LABEL_LENGTH = 200  # characters: a class name, not a document (it is shown in every table and plot)


def check_label(label: object) -> str:
    """The label as stored: surrounding whitespace removed, NFC-normalised; BadLabelError if empty or unprintable."""
    text = unicodedata.normalize("NFC", str(label).strip()) if isinstance(label, str) else str(label).strip()
    if not text:
        raise BadLabelError("empty label; every exemplar needs a non-empty label")
    if len(text) > MAX_LABEL_LENGTH:
        raise BadLabelError(f"label {text[:40]!r}... has {len(text):,} characters; a label has at most "
                            f"{MAX_LABEL_LENGTH}")
    for position, char in enumerate(text):
        kind = _unprintable(char)
        if kind is not None:
            raise BadLabelError(
                f"label {text!r} has {kind} at position {position}; a label is one "
                "line of printable text (letters of any script, digits, spaces, punctuation)"
            )
    return text


def _unprintable(char: str) -> Optional[str]:
    """What an error calls a character that labels and upload names cannot hold (with its code point), or None."""
    category = unicodedata.category(char)
    if category not in UNPRINTABLE or char in JOINERS:
        return None
    # an invisible character is only identifiable by its name; control characters have none in unicodedata
    name = f" {unicodedata.name(char, '')}".rstrip() if category == "Cf" else ""
    return f"{UNPRINTABLE[category]} U+{ord(char):04X}{name}"


def upload_name(name: object) -> str:
    """A browser-supplied file name made harmless to record and show: its last path component, printable only."""
    text = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if _unprintable(c) is None).strip()
    return text if text not in ("", ".", "..") else "upload"
