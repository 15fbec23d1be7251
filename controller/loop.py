"""The long-running loop: a pass every poll interval, and at once when the Swarm says it changed.

Events only wake the loop early; they are never trusted to say what changed (Swarm sends no task
events, and a stream can drop), so every pass still lists everything. No error in a pass, and no
broken event stream, stops the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import docker

from .logs import event
from .reconcile import Reconciler
from .result import PassResult
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)

# A node drained or removed stops its tasks: as urgent as a service update.
WAKE_EVENTS = {
    "service": {"create", "update", "remove"},
    "container": {"start", "die"},
    "node": {"update", "remove"},
}
_BATCH_SECONDS = 0.05  # let a burst of events (a stack deploy) land in one pass
# Swarm carries out a change over the seconds after its event (tasks are told to stop, new ones
# start), and sends no task events: so after an event, pass often for a while. A stopping task
# then leaves the pool well within the 2 s Swarm waits before it signals the task's container.
FOLLOW_UP_SECONDS = 5.0
FOLLOW_UP_INTERVAL = 0.25
# A task's container runs (and an agent hints so) a little before the manager's task list says
# it does (workers report task states in batches): on the 3-node bed the pass a hint woke often
# found nothing yet, and the next follow-up, 0.25 s on, found the task. So in the first second
# after a wake the follow-ups come every 0.1 s.
EARLY_SECONDS = 1.0
EARLY_INTERVAL = 0.1
ROLLING = ("updating", "rollback_started")  # a service's update still replacing tasks


def _rolling(result: PassResult | None) -> bool:
    """Swarm is still replacing some service's tasks (an update lasts longer than the follow-up
    after its one event): keep passing often until it is done."""
    services = result.snapshot.services if result is not None else ()
    return any(s.update is not None and s.update.state in ROLLING for s in services)


def _wakes(message: dict, check_label: str) -> bool:
    """A change that may change routes; the controller's own check containers are not one."""
    kind, action = message.get("Type"), message.get("Action")
    attributes = (message.get("Actor") or {}).get("Attributes") or {}
    return action in WAKE_EVENTS.get(kind, ()) and check_label not in attributes


def watch_events(
    api: docker.APIClient, wake: threading.Event, stop: threading.Event, check_label: str
) -> None:
    """Set ``wake`` on every relevant event; reconnect with back-off when the stream breaks."""
    delay = 0.5
    while not stop.is_set():
        try:
            stream = api.events(decode=True, filters={"type": list(WAKE_EVENTS)})
            delay = 0.5
            for message in stream:
                if stop.is_set():
                    return
                if _wakes(message, check_label):
                    wake.set()
        except Exception as error:
            event(log, "event_stream_broken", logging.WARNING, error=str(error), retry_in=delay)
        stop.wait(delay)
        delay = min(delay * 2, 30)


def next_wait(now: float, woke_at: float, follow_up_until: float, interval: float) -> float:
    """Seconds until the next pass unless an event comes first: the poll interval, shorter
    while a change is followed up, shortest just after a wake."""
    if now < woke_at + EARLY_SECONDS:
        return min(interval, EARLY_INTERVAL)
    if now < follow_up_until:
        return min(interval, FOLLOW_UP_INTERVAL)
    return interval


class Loop:
    def __init__(
        self,
        reconciler: Reconciler,
        api: docker.APIClient,
        interval: float,
        on_pass: Callable[[PassResult | None, BaseException | None], None] = lambda r, e: None,
        check_label: str = Vocabulary("interlock").check,
    ) -> None:
        self.reconciler = reconciler
        self.api = api
        self.interval = interval
        self.on_pass = on_pass
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.check_label = check_label  # events of the controller's own check containers

    def run(self) -> None:
        watcher = threading.Thread(
            target=watch_events,
            args=(self.api, self.wake, self.stop, self.check_label),
            daemon=True,
        )
        watcher.start()
        event(log, "loop_started", interval=self.interval)
        woke_at = follow_up_until = -FOLLOW_UP_SECONDS
        while not self.stop.is_set():
            self.wake.clear()
            if _rolling(self._one_pass()):
                follow_up_until = max(follow_up_until, time.monotonic() + FOLLOW_UP_INTERVAL)
            if self.wake.wait(next_wait(time.monotonic(), woke_at, follow_up_until, self.interval)):
                woke_at = time.monotonic()
                follow_up_until = woke_at + FOLLOW_UP_SECONDS
                time.sleep(_BATCH_SECONDS)
        event(log, "loop_stopped")

    def _one_pass(self) -> PassResult | None:
        try:
            result = self.reconciler.run_pass()
        except Exception as error:  # the loop outlives any single pass (run_pass logged it)
            self.on_pass(None, error)
            return None
        self.on_pass(result, None)
        return result
