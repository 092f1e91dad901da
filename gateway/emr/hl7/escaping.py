"""HL7 v2 escape sequences for text we put into messages (section 2.7): separators and line breaks.

python-hl7's own ``escape`` also turns every non-ASCII character into a
``\\X..\\`` sequence of its code point, which is wrong for UTF-8 messages;
Vietnamese text must travel as it is.
"""

from __future__ import annotations

import re

_PLAIN = re.compile(r"[^\\|^&~\x00-\x1f]*")
_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


def escape(text: str, *, line_breaks: bool = False) -> str:
    """``text`` with the standard delimiters escaped; with ``line_breaks``, each line break as ``\\.br\\`` (FT)."""
    if _PLAIN.fullmatch(text):
        return text
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    escaped = ["".join(_ESCAPES.get(ch, ch) for ch in line if ch >= " " or ch == "\t") for line in lines]
    return ("\\.br\\" if line_breaks else " ").join(escaped)
