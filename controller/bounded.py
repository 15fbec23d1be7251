"""A bounded memory for the caches of a long-running process (verdicts, refusals, digests)."""

from __future__ import annotations

MEMORY = 512  # verdicts (and refusals) kept: a long-running controller sees ever new shapes


def remember(memory: dict, key, value) -> None:
    """Store in an insertion-ordered dict, dropping the oldest entry beyond MEMORY."""
    memory[key] = value
    while len(memory) > MEMORY:
        memory.pop(next(iter(memory)))
