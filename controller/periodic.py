"""A background worker that does one round every interval, in a daemon thread of its own.

The beacon and the scraper work this way so that neither ever delays a reconcile pass. The first
round comes after at most a second; a failing round is logged, and the thread goes on.
"""

from __future__ import annotations

import logging
import threading

from .logs import event

log = logging.getLogger(__name__)


class Periodic:
    """Mix-in: the class gives ``interval``, ``rounds``, ``stop`` (a threading.Event),
    ``round()``, and the names ``thread_name`` and ``failure_event``."""

    thread_name = "interlock-periodic"
    failure_event = "round_failed"
    interval: float
    rounds: int
    stop: threading.Event

    def round(self) -> None:
        raise NotImplementedError

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        while not self.stop.wait(self.interval if self.rounds else min(self.interval, 1.0)):
            try:
                self.round()
            except Exception as error:  # the thread outlives any bad round
                event(log, self.failure_event, logging.ERROR, error=str(error))
