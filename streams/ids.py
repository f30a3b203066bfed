"""Fast ULIDs (Crockford base32, 26 characters) for the hot ingest path.

python-ulid builds an object per id (~30 µs); accepting an event needs only the
string, so it is encoded here directly.

A ULID's text splits cleanly in two: 10 characters for the 48-bit time (with 2
leading zero bits) and 16 characters, 5 bits each, for the 80 random bits. So the
random part of a new id can be drawn as 16 random characters: one ``os.urandom``
call for a whole batch, each byte mapped to an alphabet character by its low 5
bits with ``bytes.translate`` (256 is a multiple of 32, so every character is
equally likely and the 80 bits are uniform). The time prefix is shared by every id
of a batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two base32 digits at a time: 10 bits -> 2 characters.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
# Byte -> alphabet character by its low 5 bits, for bytes.translate.
_BYTE_TO_CHAR = bytes(_ALPHABET[b & 0x1F].encode("ascii")[0] for b in range(256))
_RANDOM_CHARS = 16


def ulid_from_int(value: int) -> str:
    """The 26-character ULID text of a 128-bit integer."""
    # 128 bits = 26 base32 digits with 2 spare leading bits: 13 pairs of 10 bits.
    out = []
    for shift in range(120, -10, -10):
        out.append(_PAIRS[(value >> shift) & 0x3FF])
    return "".join(out)


def ulid_millis(text: str) -> int:
    """The time part (ms since the epoch) of a ULID's text; 0 if it is not a ULID."""
    if len(text) != 26:
        return 0
    value = 0
    for char in text[:10].upper():
        digit = _ALPHABET.find(char)
        if digit < 0:
            return 0
        value = value * 32 + digit
    return value


def derived_ulid(millis: int, *parts: str) -> str:
    """A ULID of ``millis`` whose 80 random bits are a hash of ``parts``.

    The same parts give the same id, so a record that a retry, a replay or a
    restart produces again carries the id it had the first time: run ids from the
    event and function, ids of events a step sends, of system events, of cron ticks.
    """
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return ulid_from_int((max(millis, 0) << 80) | int.from_bytes(digest[:10], "big"))


def new_ulid(millis: int) -> str:
    """A new ULID for ``millis`` with 80 random bits."""
    return ulid_from_int((millis << 80) | int.from_bytes(os.urandom(10), "big"))


_last_prefix: tuple[int, str] = (-1, "")


def time_prefix(millis: int) -> str:
    """The first 10 characters of every ULID of ``millis`` (its 48-bit time part)."""
    global _last_prefix
    last = _last_prefix  # one tuple: threads may race to replace it, never to tear it
    if last[0] != millis:
        last = _last_prefix = (millis, ulid_from_int(millis << 80)[:10])
    return last[1]


def new_ulids(millis: int, count: int) -> list[str]:
    """``count`` new ULIDs for ``millis``, each with 80 random bits of its own."""
    if count <= 0:
        return []
    prefix = time_prefix(millis)
    text = os.urandom(_RANDOM_CHARS * count).translate(_BYTE_TO_CHAR).decode("ascii")
    return [prefix + text[i : i + _RANDOM_CHARS] for i in range(0, len(text), _RANDOM_CHARS)]


def ulids_with_randomness(millis: int, randomness: Iterable[int]) -> list[str]:
    """ULIDs of ``millis`` with the given 80-bit random parts (deterministic ids)."""
    prefix = time_prefix(millis)
    pairs = _PAIRS
    return [
        prefix + "".join([pairs[(r >> shift) & 0x3FF] for shift in range(70, -10, -10)])
        for r in randomness
    ]
