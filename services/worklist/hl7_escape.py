"""HL7 v2 escape sequences in text (HL7 v2.5.1 2.7), read without logging values.

python-hl7's own unescaping logs whole fields on a sequence it does not know
and raises on a malformed one; this reader never logs and says what is wrong
with a :class:`EscapeError`, which the caller answers as a data type error.

- ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``: the separators and the escape character (2.7.1);
- ``\\H\\ \\N\\``: start and end of highlighting (2.7.3), dropped;
- ``\\Xhh…\\``: bytes in hexadecimal (2.7.5), decoded in the message's character set;
- ``\\Zxx…\\``: locally defined (2.7.7), meaningless here, dropped;
- ``\\.br\\ \\.sp<n>\\ \\.sk<n>\\ \\.ce\\``: formatting of FT (2.7.6), a space (DICOM
  string values hold no line breaks); ``\\.fi\\ \\.nf\\ \\.in<n>\\ \\.ti<n>\\`` dropped;
- ``\\Cxxyy\\ \\Mxxyyzz\\``: a switch of character set (2.7.2), which would need
  ISO 2022 decoding: refused, like an unknown or unterminated sequence, rather
  than stored garbled.
"""

from __future__ import annotations

import re

_COUNT = re.compile(r"[+-]?[0-9]{0,3}")
_SPACE = frozenset({".br", ".sp", ".sk", ".ce"})
_DROPPED = frozenset({".fi", ".nf", ".in", ".ti"})


class EscapeError(ValueError):
    """An escape sequence that cannot be read; the text says which kind, never the value."""


def unescape(text: str, separators: str, escape: str, codec: str) -> str:
    """``text`` with its escape sequences replaced.

    ``separators`` is python-hl7's: segment, field, repetition, component,
    subcomponent; ``codec`` decodes the bytes of ``\\X…\\``.
    """
    if escape not in text:
        return text
    named = {
        "F": separators[1],
        "R": separators[2],
        "S": separators[3],
        "T": separators[4],
        "E": escape,
        "H": "",
        "N": "",
    }
    parts = text.split(escape)
    if len(parts) % 2 == 0:
        raise EscapeError("an escape sequence is not terminated")
    out = [parts[0]]
    for sequence, literal in zip(parts[1::2], parts[2::2], strict=True):
        out.append(_replacement(sequence, named, codec))
        out.append(literal)
    return "".join(out)


def _replacement(sequence: str, named: dict[str, str], codec: str) -> str:
    if sequence in named:
        return named[sequence]
    kind = sequence[:1]
    if kind == "X":
        digits = sequence[1:]
        try:
            return bytes.fromhex(digits).decode(codec) if digits else ""
        except ValueError as exc:  # odd length, not hexadecimal, or not text in the codec
            raise EscapeError("a \\X\\ escape is not hexadecimal text") from exc
    if kind == "Z":
        return ""
    if kind in ("C", "M"):
        raise EscapeError("a character set switch (\\C\\, \\M\\) is not supported")
    command, count = sequence[:3], sequence[3:]
    if (command in _SPACE or command in _DROPPED) and _COUNT.fullmatch(count):
        return " " if command in _SPACE else ""
    raise EscapeError("an escape sequence is not one of HL7 v2.5.1 2.7")
