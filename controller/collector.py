"""The cyclic garbage collector held off while a pass builds its picture of the Swarm.

A pass lists the whole Swarm and turns it into tens of thousands of small objects that all live
until the pass ends: exactly the pattern that makes CPython's generational collector promote them
and then walk the whole heap in full collections. At 10,000 services that was a 0.5 s stall,
several times a minute (``python -m bench --only scale``). These objects hold no reference cycles
and are freed by reference counting when the pass drops them, so the collector finds nothing in
them: it is paused for the pass and resumed after, when anything cyclic the pass left behind is
collected as usual.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Automatic collection off inside, back as it was after (also when the body raises); nested
    uses and a collector already off are left as they were."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
