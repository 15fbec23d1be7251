"""The check stage: which rendered configurations may go live, and whom a refusal is down to.

Deciding (``desired``, ``render``) is pure; this stage asks the proxy's own binary (through a
``Checker``) and returns verdicts, never writing anything itself. When rendering or the binary
refuses a proxy's configuration, the services responsible are found by bisection over the
proxy's services, oldest first, and left out with the proxy's own words; every other service is
deployed. Only when even a configuration with no service at all is refused (a broken template or
setting) is the proxy's whole configuration held back, and it keeps serving what it has.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from .bounded import remember
from .desired import Desired, DesiredProxy, without
from .labels import Problem
from .render import Rendered, RenderError, RenderOptions, render

CHECK_LABEL = "proxy check"  # what a Problem names when the proxy refused a service's routes
_PLACEHOLDER = "192.0.2.1"  # TEST-NET-1: never routed, only ever written into a checked file


_STAMP = re.compile(r"^[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} ", re.MULTILINE)
_NOTICE = re.compile(r"^\[NOTICE\].*\n?", re.MULTILINE)  # HAProxy's version banner
_OUTPUT_CHARS = 1500


def proxy_words(text: str) -> str:
    """What a proxy said, without nginx's timestamps and HAProxy's version banner: the same
    refusal reads the same in every pass (a Problem is logged when it appears, not each time)."""
    return _NOTICE.sub("", _STAMP.sub("", text)).strip()[-_OUTPUT_CHARS:]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    output: str  # the proxy's own words when it refused


class Checker(Protocol):
    """What the stage needs of a checker: the proxy's verdict on one rendered config."""

    def check(
        self, desired: DesiredProxy, rendered: Rendered, options: RenderOptions
    ) -> Verdict: ...


def shape(desired: DesiredProxy, options: RenderOptions) -> str:
    """Digest of the config with addresses blanked: equal shapes pass or fail together."""
    blanked = tuple(
        replace(b, targets=(f"{_PLACEHOLDER}:{b.port}",) if b.targets else ())
        for b in desired.backends
    )
    return render(replace(desired, backends=blanked), options).digest


def culprits(services: Sequence[str], passes: Callable[[Sequence[str]], bool]) -> list[str] | None:
    """The services to leave out so that the rest passes, or None when even none passes.

    ``services`` come oldest first and ``passes(kept)`` says whether a configuration of just
    those services is accepted. Each step finds, by binary search, the shortest prefix that
    fails; its last service is a culprit (the older ones passed without it), so k culprits
    among n services cost about k * log2(n) checks, and an older service always wins over a
    newer one that it clashes with.
    """
    if not passes(()):
        return None
    kept: list[str] = []
    rest, found = list(services), []
    while rest and not passes(kept + rest):
        low, high = 0, len(rest) - 1  # kept + rest[:high + 1] fails; kept alone passes
        while low < high:
            middle = (low + high) // 2
            if passes(kept + rest[: middle + 1]):
                low = middle + 1
            else:
                high = middle
        found.append(rest[low])
        kept += rest[:low]
        rest = rest[low + 1 :]
    return found


@dataclass(frozen=True)
class Verified:
    """One proxy after the check stage: what may go live on it, or why nothing may."""

    desired: DesiredProxy  # without the services the proxy refused
    rendered: Rendered | None  # None: nothing may go live (``refused`` says why)
    refused: str = ""
    problems: tuple[Problem, ...] = ()


@dataclass
class Verifier:
    """Renders and checks each proxy's configuration; remembers whom refusals were down to."""

    options: RenderOptions
    checker: Checker | None = None
    prefix: str = "interlock"
    left_out: dict[tuple[str, str], tuple[Problem, ...] | None] = field(default_factory=dict)
    # The last config rendered for each proxy and what it was rendered from: a pass over an
    # unchanged Swarm renders nothing (comparing 5,000 routes takes ~8 ms, rendering ~200).
    _last: dict[str, tuple[DesiredProxy, Rendered]] = field(default_factory=dict, repr=False)

    def verify(self, desired: DesiredProxy, needs_check: Callable[[Rendered], bool]) -> Verified:
        """Render, check what ``needs_check`` (a config not yet live), attribute any refusal."""
        first = self._try(desired, False)
        if isinstance(first, Rendered) and needs_check(first):
            first = self._try(desired, True)
        if isinstance(first, Rendered):
            return Verified(desired, first)
        key = (desired.proxy.image, _shape(desired, self.options) or first.output)
        if key not in self.left_out:
            remember(self.left_out, key, self._attribute(desired))
        found = self.left_out[key]
        if not found:
            return Verified(desired, None, first.output)
        kept = without(desired, [p.service for p in found])
        final = self._try(kept, True)
        if not isinstance(final, Rendered):  # only if a clash outwits the search: hold all back
            return Verified(desired, None, first.output)
        return Verified(kept, final, "", found)

    def _attribute(self, desired: DesiredProxy) -> tuple[Problem, ...] | None:
        """A problem for each service to leave out, or None when the proxy refuses even none."""
        guilty = culprits(
            [b.service for b in desired.backends],
            lambda kept: isinstance(self._try(_only(desired, kept), True), Rendered),
        )
        return None if guilty is None else self._problems(desired, guilty)

    def _try(self, desired: DesiredProxy, check: bool) -> Rendered | Verdict:
        """The rendered config, or the verdict that refused it (rendering's or the binary's)."""
        try:
            rendered = self._render(desired)
        except RenderError as error:
            return Verdict(False, f"render refused: {error}")
        if not check or self.checker is None:
            return rendered
        verdict = self.checker.check(desired, rendered, self.options)
        if verdict.ok:
            return rendered
        words = proxy_words(verdict.output)
        return Verdict(False, f"{desired.proxy.spec.kind} refused the config: {words}")

    def _render(self, desired: DesiredProxy) -> Rendered:
        last = self._last.get(desired.proxy.name)
        if last is not None and last[0] == desired:
            return last[1]
        rendered = render(desired, self.options)
        remember(self._last, desired.proxy.name, (desired, rendered))
        return rendered

    def _problems(self, desired: DesiredProxy, guilty: Sequence[str]) -> tuple[Problem, ...]:
        """The proxy's own words for each service left out, found by checking it alone."""
        problems = []
        for service in guilty:
            alone = self._try(_only(desired, [service]), True)
            why = alone.output if isinstance(alone, Verdict) else "refused together with others"
            problems.append(Problem(service, CHECK_LABEL, why, proxy=desired.proxy.name))
        return tuple(problems)


def _shape(desired: DesiredProxy, options: RenderOptions) -> str:
    """The config's shape (addresses blanked): equal shapes are refused by the same services."""
    try:
        return shape(desired, options)
    except RenderError:
        return ""


def _only(desired: DesiredProxy, kept: Sequence[str]) -> DesiredProxy:
    keep = set(kept)
    return without(desired, [b.service for b in desired.backends if b.service not in keep])


def render_all(
    desired: Desired, options: RenderOptions, verifier: Verifier | None = None
) -> tuple[dict[str, Rendered], dict]:
    """Every proxy's rendered config without the binary's check (benchmarks, metrics tests);
    ``verifier``: one kept from pass to pass, as the controller keeps its own."""
    rendered, refused = {}, {}
    verifier = verifier or Verifier(options)
    for one in desired.proxies:
        verified = verifier.verify(one, lambda _text: False)
        if verified.rendered is None:
            refused[one.proxy.name] = verified.refused
        else:
            rendered[one.proxy.name] = verified.rendered
    return rendered, refused
