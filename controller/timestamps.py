"""Docker's timestamps as numbers (pure).

The Engine API writes times in Go's RFC 3339 with nanoseconds and trailing zeros trimmed
(``2026-11-26T07:35:27.1234Z``, or ``...27Z`` on the second), sometimes with an offset instead of
``Z``. Compared as strings they can invert within one second (``.1234Z`` sorts after ``.12345Z``),
and the order of creation is what settles who owns a host, so it is compared as integers.
"""

from __future__ import annotations

import re
from datetime import datetime

_RFC3339 = re.compile(
    r"(?P<base>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?P<zone>Z|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
UNKNOWN = 2**63 - 1  # an unreadable time sorts last: such an object never wins a tie on age


def nanoseconds(text: str) -> int:
    """Nanoseconds since the epoch, or ``UNKNOWN`` for a text that is not RFC 3339."""
    found = _RFC3339.fullmatch(text.strip())
    if not found:
        return UNKNOWN
    zone = "+00:00" if found["zone"] == "Z" else found["zone"]
    try:
        seconds = int(datetime.fromisoformat(found["base"] + zone).timestamp())
    except ValueError:
        return UNKNOWN
    fraction = (found["fraction"] or "").ljust(9, "0")
    return seconds * 1_000_000_000 + int(fraction)
