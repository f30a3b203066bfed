"""Fast ULIDs (Crockford base32, 26 characters) for the hot ingest path.

python-ulid builds an object per id (~30 µs); accepting an event needs only the
string, so it is encoded here directly from the 128-bit integer.
"""

from __future__ import annotations

import os

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 digits at a time: 10 bits -> 2 characters.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def ulid_from_int(value: int) -> str:
    """The 26-character ULID text of a 128-bit integer."""
    # 128 bits = 26 base32 digits with 2 spare leading bits: 13 pairs of 10 bits.
    out = []
    for shift in range(120, -10, -10):
        out.append(_PAIRS[(value >> shift) & 0x3FF])
    return "".join(out)


def new_ulid(millis: int) -> str:
    """A new ULID for ``millis`` with 80 random bits."""
    return ulid_from_int((millis << 80) | int.from_bytes(os.urandom(10), "big"))
