"""Bounded memories for the caches of a long-running process (verdicts, refusals, digests, and
what the last pass made)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

MEMORY = 512  # verdicts (and refusals) kept: a long-running controller sees ever new shapes


def remember(memory: dict, key, value) -> None:
    """Store in an insertion-ordered dict, dropping the oldest entry beyond MEMORY."""
    memory[key] = value
    while len(memory) > MEMORY:
        memory.pop(next(iter(memory)))


class Recall:
    """What the last pass made, each thing by a key with the inputs it was made from: made again
    from equal inputs, the same object is handed back instead.

    Why: at 10,000 services a pass's objects outgrow the processor's caches (32 MiB here), and
    making them anew reads every task and service again from memory; most of them are the same
    objects as in the last pass (``snapshot.Parses`` reuses them), so comparing inputs costs a
    pointer each. The objects handed back are equal to what ``make`` would return, so a caller
    sees the same results with or without this memory, only sooner.

    One dict, kept from pass to pass (building a new one each pass cost more than it saved):
    each entry carries the number of the last pass that asked for it, and when the entries
    outnumber twice what the last pass asked for, those it did not ask for are dropped
    (``passed``). No lock: two threads' passes may drop each other's entries, which costs a
    remake, never a wrong object.
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, list] = {}  # key: [inputs, made, pass number]
        self._pass = 0
        self._asked = 0  # entries asked for in this pass

    def get(self, key: Hashable, inputs: tuple, make: Callable[..., T], *args: Any) -> T:
        """``make(*args)``, or what it made last time from inputs equal to ``inputs`` (compared
        element by element: identical objects cost a pointer comparison, nothing else)."""
        self._asked += 1
        found = self._entries.get(key)
        if found is not None and len(found[0]) == len(inputs):
            if all(map(operator.is_, found[0], inputs)):
                found[2] = self._pass
                return found[1]
            if found[0] == inputs:  # equal, not the same objects: theirs from now on, so that
                found[0], found[2] = inputs, self._pass  # the next pass compares pointers
                return found[1]
        # A new entry, not the old one changed: a thread that reads the old one meanwhile
        # sees its inputs with what was made of them.
        made = make(*args)
        self._entries[key] = [inputs, made, self._pass]
        return made

    def same(self, key: Hashable, value: T) -> T:
        """The value remembered under ``key`` if it equals ``value`` (then later comparisons
        with it cost a pointer), else ``value``, remembered."""
        return self.get(key, (value,), _itself, value)

    def passed(self) -> None:
        """A pass ended: past twice its size, what it did not ask for is forgotten."""
        if len(self._entries) > 2 * self._asked + 64:
            now = self._pass
            self._entries = {k: e for k, e in self._entries.items() if e[2] == now}
        self._pass += 1
        self._asked = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries = {}
        self._asked = 0


def _itself(value: T) -> T:
    return value
