"""Step outputs and run results: JSON-serializable and at most 4 MiB.

Outputs are encoded once, when the step completes: the text goes to the edge
(which stores it), and user code gets the decoded value, so the first
execution and every replay see exactly the same thing (tuples become lists,
dict keys become strings, as they would after a round trip through storage).
"""

from __future__ import annotations

import json
from typing import Any

from streams.errors import LimitExceededError, SerializationError

MAX_OUTPUT_BYTES = 4 * 1024 * 1024
# Values that decode to themselves; no need to parse them back.
_IDENTITY_TYPES = (str, int, float, bool, type(None))


def encode_output(value: Any, what: str, limit: int = MAX_OUTPUT_BYTES) -> tuple[Any, str]:
    """Return ``(decoded value, JSON text)``; raise on unserializable or oversized values.

    ``what`` names the producer in messages, e.g. ``"step 'charge'"``.
    """
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError: a lone surrogate
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise SerializationError(
            f"{what} returned a value of type {type(value).__name__} that is not "
            f"JSON-serializable ({detail}); return dicts, lists, strings, numbers, booleans "
            "or None (for a pydantic model, return model.model_dump(mode='json'))"
        ) from None
    if size > limit:
        raise LimitExceededError(
            f"{what} returned {size} bytes of JSON; the output size limit is "
            f"{limit / 1024 / 1024:g} MiB ({limit} bytes): store large data elsewhere and "
            "return a reference to it"
        )
    if type(value) in _IDENTITY_TYPES:
        return value, text
    return json.loads(text), text
