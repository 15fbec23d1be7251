"""One reconciliation pass: observe, decide, check, plan, act, report.

Level-triggered: the pass starts from a full listing and remembers nothing it needs for
correctness (the check cache and the digests of in-place pushes only save work), so a pass after
a crash, a restart or a missed event converges the same as any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from . import acme, acmekeys, certcheck, identity
from . import plan as planning
from .act import Executor
from .certcheck import CertificateChecker
from .check import Checker
from .collector import collector_paused
from .desired import Desired, DesiredProxy, Proxy, Trust, desired_state
from .labels import Problem
from .logs import event, new_pass_id, pass_scope
from .observe import Observer
from .render import Rendered, RenderOptions
from .result import PassResult
from .settings import Settings
from .snapshot import Snapshot
from .verify import Verifier

log = logging.getLogger(__name__)


class Checks:
    """Which rendered configs a pass has the proxy's own binary check (in a container)."""

    NONE = "none"  # render, diff, status and a plain validate: nothing started, nothing written
    CHANGED = "changed"  # a real pass: every config that is not live yet
    ALL = "all"  # validate --check: every config, live or not


def trust(settings: Settings) -> Trust:
    return Trust(settings.proxy_trust_label, settings.proxy_name_pattern)


def render_options(settings: Settings) -> RenderOptions:
    return RenderOptions(
        http_port=settings.proxy_http_port,
        https_port=settings.proxy_https_port,
        max_connections=settings.max_connections,
        connect_timeout=settings.proxy_connect_timeout,
        read_timeout=settings.proxy_read_timeout,
        client_keepalive=settings.nginx_client_keepalive,
        worker_shutdown_timeout=settings.nginx_worker_shutdown_timeout,
        template_dir=settings.template_dir,
        status_port=settings.proxy_status_port,
        access_log=settings.access_log,
    )


class _Decided(NamedTuple):
    """What a pass decided before acting on it."""

    snapshot: Snapshot
    desired: Desired
    rendered: dict[str, Rendered]
    refused: dict[str, str]
    problems: list[Problem]
    actions: list[planning.Action]
    acme: acme.AcmeState


@dataclass
class Reconciler:
    """Holds the clients and caches that outlive a pass; `run_pass` does the work."""

    settings: Settings
    observer: Observer
    executor: Executor
    checker: Checker | None
    served: Callable[[Snapshot, list[Proxy]], Mapping[str, str]] = lambda snapshot, proxies: {}
    api_calls: Callable[[], int] = lambda: 0  # the gateway's count of Docker calls so far
    # Loads each TLS pair with the proxy's binary and the real secrets (None: not checked).
    cert_checker: CertificateChecker | None = None
    # Agent mode: proxies whose config some node's binary refused (the Board's reports).
    refused_by_agents: Callable[[], set[str]] = lambda: set()
    last: PassResult | None = field(default=None, init=False)
    # Signal-mode proxies checked separately until a pass leaves no service of theirs out.
    suspects: set[str] = field(default_factory=set, init=False)
    verifier: Verifier = field(init=False)

    def __post_init__(self) -> None:
        self.verifier = Verifier(render_options(self.settings), self.checker)

    def _verify(
        self, snapshot: Snapshot, desired: Desired, served: Mapping[str, str], checks: str
    ) -> tuple[Desired, dict[str, Rendered], dict[str, str], dict[str, planning.Deployable]]:
        """Render and check every proxy; leave out the services a proxy refused.

        Returns the desired state as it will be served (refused services out, their problems
        added), what was rendered, the proxies that keep what they serve and why, and what may
        go live. Which configs the proxy's binary checks: see ``Checks``.
        """
        prefix = self.settings.label_prefix
        rendered, refused, deployable = {}, {}, {}
        proxies, problems = [], list(desired.problems)
        # A signal-mode proxy is checked in its own container as it is pushed: a separate check
        # (and the search for the services it refuses) only after that check refused a push,
        # here or on an agent's node, and for as long as that search leaves a service out (or
        # the next pass would render the refused service back in and push it again).
        self.suspects |= _refused_in_place(self.last) | self.refused_by_agents()
        for one in desired.proxies:

            def target(text: Rendered, one: DesiredProxy = one) -> planning.Deployable:
                return planning.Deployable(one.proxy, text, planning.secret_mounts(one))

            def needs_check(text: Rendered, target=target, one: DesiredProxy = one) -> bool:
                if checks != Checks.CHANGED:
                    return checks == Checks.ALL
                if one.proxy.mode == "signal":  # checked in its own container before the swap
                    return one.proxy.name in self.suspects
                return not planning.is_current(snapshot, prefix, target(text), served)

            verified = self.verifier.verify(one, needs_check)
            if verified.rendered is not None and not verified.problems:
                self.suspects.discard(one.proxy.name)
            proxies.append(verified.desired)
            problems += verified.problems
            if verified.rendered is None:
                refused[one.proxy.name] = verified.refused
                continue
            rendered[one.proxy.name] = verified.rendered
            deployable[one.proxy.name] = planning.Deployable(
                one.proxy, verified.rendered, planning.secret_mounts(verified.desired)
            )
        return Desired(tuple(proxies), tuple(problems)), rendered, refused, deployable

    def run_pass(self, dry_run: bool = False, checks: str = "changed") -> PassResult:
        """One pass. ``dry_run`` writes nothing; ``checks`` says which configs the proxy's
        binary checks (see ``Checks``): a dry run with ``Checks.NONE`` starts no container.

        Every event logged during the pass carries its id; a pass that raises is logged here.
        """
        with pass_scope(new_pass_id()) as pass_id:
            try:
                return self._run_pass(pass_id, dry_run, checks)
            except Exception as error:
                event(
                    log, "pass_failed", logging.ERROR, error=str(error), kind=type(error).__name__
                )
                raise

    def _run_pass(self, pass_id: str, dry_run: bool, checks: str) -> PassResult:
        started = time.monotonic()
        calls_before = self.api_calls()
        with collector_paused():  # the listing and what is built from it die with the pass
            decided = self._decide(checks)
        snapshot, actions = decided.snapshot, decided.actions
        outcomes = [] if dry_run else self.executor.run(actions, snapshot)
        result = PassResult(
            pass_id,
            snapshot,
            decided.desired,
            decided.rendered,
            actions,
            outcomes,
            decided.problems,
            decided.refused,
        )
        result.acme = decided.acme
        result.seconds = time.monotonic() - started
        result.api_calls = self.api_calls() - calls_before
        _log_pass(result, self.last)
        self.last = result
        return result

    def _decide(self, checks: str) -> _Decided:
        """Observe, decide, check and plan: everything of a pass before it acts."""
        prefix = self.settings.label_prefix
        snapshot = self.observer.snapshot()
        # The proxies' status pages answer the controller alone: its addresses are in the config.
        allowed = identity.status_allow(snapshot, self.settings)
        self.verifier.options = replace(render_options(self.settings), status_allow=allowed)
        desired = desired_state(
            snapshot, prefix, self.settings.mode, trust(self.settings), self.settings.families
        )
        # ACME: certificates in Swarm secrets served, pending challenges answered (acme.py).
        acme_state = acme.state(snapshot, desired, prefix)
        retry = self.settings.acme_retry_seconds
        opened = self._opened(acme_state)
        desired = acme.with_acme(desired, acme_state, prefix, time.time(), retry, opened)
        signal_proxies = [d.proxy for d in desired.proxies if d.proxy.mode == "signal"]
        served = self.served(snapshot, signal_proxies) if signal_proxies else {}
        if self.cert_checker is not None:  # a certificate a proxy cannot load never reaches it
            start = checks != Checks.NONE
            desired = certcheck.screen(self.cert_checker, snapshot, desired, prefix, start)
        desired, rendered, refused, deployable = self._verify(snapshot, desired, served, checks)
        problems = list(desired.problems) + _signal_problems(snapshot, prefix, signal_proxies)
        # A squatted config name or an update Swarm rolled back: the plan holds it, say why.
        for held in planning.deploy_problems(snapshot, prefix, deployable):
            problems.append(held)
            refused.setdefault(held.proxy, held.reason)
        actions = planning.plan(snapshot, prefix, deployable, served, self.settings.keep_configs)
        return _Decided(snapshot, desired, rendered, refused, problems, actions, acme_state)

    def _opened(self, acme_state: acme.AcmeState) -> dict[str, tuple[str, str]]:
        """The ACME certificates' chains and keys, opened in memory for this pass only (so
        signal-mode proxies get them in place); none without the account key's secret."""
        if not acme_state.pairs or not acme_state.wanted:
            return {}
        sealing = acmekeys.read_sealing_key(self.settings.acme_account_key_file)
        return acmekeys.open_pairs(acme_state.pairs, sealing)

    def desired_proxy(self, name: str) -> DesiredProxy | None:
        if not self.last:
            return None
        return next((d for d in self.last.desired.proxies if d.proxy.name == name), None)


def _signal_problems(snapshot: Snapshot, prefix: str, proxies: list[Proxy]) -> list[Problem]:
    owned = planning.owned_names(snapshot, prefix)
    found = []
    for proxy in proxies:
        found += planning.signal_problems(snapshot, prefix, proxy, owned)
    return found


def _refused_in_place(previous: PassResult | None) -> set[str]:
    """Proxies whose binary refused an in-place push in the last pass."""
    if previous is None:
        return set()
    return {
        o.action.proxy
        for o in previous.outcomes
        if not o.ok and isinstance(o.action, planning.PushConfig) and "refused" in o.error
    }


def _owner_changes(result: PassResult, previous: PassResult | None) -> list[tuple]:
    """(proxy, host, old owner, new owner) for hosts that passed to another service.

    A re-created owner is younger than a service that was refused the host so far, which then
    takes it over: legitimate, but never silent.
    """
    if previous is None:
        return []
    before = {(d.proxy.name, h): o for d in previous.desired.proxies for h, o in d.owners}
    return [
        (d.proxy.name, host, before[(d.proxy.name, host)], owner)
        for d in result.desired.proxies
        for host, owner in d.owners
        if before.get((d.proxy.name, host), owner) != owner
    ]


def _log_pass(result: PassResult, previous: PassResult | None) -> None:
    """Log what the pass did, and problems only when they appear (not once a second)."""
    seen = set(previous.problems) if previous else set()
    for problem in (p for p in result.problems if p not in seen):
        level = logging.WARNING if problem.rejected else logging.INFO
        event(
            log,
            "service_problem",
            level,
            service=problem.service,
            label=problem.label,
            reason=problem.reason,
            proxy=problem.proxy,
        )
    for proxy, host, before, now in _owner_changes(result, previous):
        event(
            log,
            "host_owner_changed",
            logging.WARNING,
            proxy=proxy,
            host=host,
            previous_owner=before,
            owner=now,
        )
    refused_before = previous.refused if previous else {}
    for proxy, why in result.refused.items():
        if refused_before.get(proxy) == why:
            continue
        event(log, "config_refused", logging.ERROR, proxy=proxy, reason=why)
    event(
        log,
        "pass_done",
        logging.INFO if result.actions or result.errors else logging.DEBUG,
        seconds=round(result.seconds, 3),
        actions=len(result.actions),
        errors=len(result.errors),
        api_calls=result.api_calls,
        proxies=len(result.desired.proxies),
        services=len(result.snapshot.services),
    )
