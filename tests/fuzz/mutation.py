"""Inputs for the fuzz targets: random bytes, and valid inputs mutated the way fuzzers do.

A random byte string rarely gets past a parser's first check; a valid input
with a few bytes flipped, a length field set to 0, 1 or 2³²-1, a slice
repeated or cut off reaches the parser's inner loops, where the bugs are.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from hypothesis import strategies as st

INTERESTING_LENGTHS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0xFFFFFFFF)
OPERATIONS = ("flip", "byte", "insert", "delete", "truncate", "length16", "length32", "repeat")


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], most: int = 8) -> bytes:
    """One of ``seeds`` with 1 to ``most`` mutations."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, most))):
        operation = draw(st.sampled_from(OPERATIONS))
        at = draw(st.integers(0, len(data)))
        if operation == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "byte" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif operation == "truncate":
            del data[at:]
        elif operation in ("length16", "length32"):
            value = draw(st.sampled_from(INTERESTING_LENGTHS) | st.integers(0, 0xFFFFFFFF))
            size = 2 if operation == "length16" else 4
            order = draw(st.sampled_from("<>"))
            packed = struct.pack(order + ("H" if size == 2 else "I"), value & (256**size - 1))
            data[at : at + size] = packed
        elif operation == "repeat" and at < len(data):
            piece = data[at : at + draw(st.integers(1, 64))]
            data[at:at] = piece * draw(st.integers(1, 16))
    return bytes(data)


def inputs(seeds: Sequence[bytes], max_random: int = 512) -> st.SearchStrategy[bytes]:
    """Random bytes, or a mutated seed (three times out of four), or a seed as it is."""
    return st.one_of(
        st.binary(max_size=max_random),
        mutated(seeds),
        mutated(seeds),
        mutated(seeds),
        st.sampled_from(seeds),
    )
