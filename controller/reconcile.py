"""One reconciliation pass: observe, decide, check, plan, act, report.

Level-triggered: the pass starts from a full listing and remembers nothing it needs for
correctness (the check cache and the digests of in-place pushes only save work), so a pass after
a crash, a restart or a missed event converges the same as any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import plan as planning
from .act import Executor, Outcome
from .check import Checker
from .desired import Desired, DesiredProxy, Proxy, desired_state
from .labels import Problem
from .logs import event, new_pass_id, pass_scope
from .observe import Observer
from .render import Rendered, RenderError, RenderOptions, render
from .settings import Settings
from .snapshot import Snapshot

log = logging.getLogger(__name__)


def render_options(settings: Settings) -> RenderOptions:
    return RenderOptions(
        http_port=settings.proxy_http_port,
        https_port=settings.proxy_https_port,
        max_connections=settings.max_connections,
        connect_timeout=settings.proxy_connect_timeout,
        read_timeout=settings.proxy_read_timeout,
        client_keepalive=settings.nginx_client_keepalive,
        template_dir=settings.template_dir,
        status_port=settings.proxy_status_port,
    )


@dataclass
class PassResult:
    """Everything one pass saw and did: for logs, metrics, `status` and the CLI's exit code."""

    pass_id: str
    snapshot: Snapshot
    desired: Desired
    rendered: dict[str, Rendered]
    actions: list[planning.Action]
    outcomes: list[Outcome]
    problems: list[Problem]
    refused: dict[str, str]  # proxy name -> why its config was not deployed
    seconds: float = 0.0
    api_calls: int = 0

    @property
    def errors(self) -> list[str]:
        failed = [f"{o.action.proxy}: {o.error}" for o in self.outcomes if not o.ok]
        return failed + [f"{proxy}: {why}" for proxy, why in self.refused.items()]

    @property
    def converged(self) -> bool:
        """Every proxy got (or already had) its desired config, and nothing failed."""
        return not self.errors


def render_all(desired: Desired, options: RenderOptions) -> tuple[dict[str, Rendered], dict]:
    rendered, refused = {}, {}
    for one in desired.proxies:
        try:
            rendered[one.proxy.name] = render(one, options)
        except RenderError as error:  # validation should make this impossible; never half-write
            refused[one.proxy.name] = f"render refused: {error}"
    return rendered, refused


@dataclass
class Reconciler:
    """Holds the clients and caches that outlive a pass; `run_pass` does the work."""

    settings: Settings
    observer: Observer
    executor: Executor
    checker: Checker | None
    served: Callable[[Snapshot, list[Proxy]], Mapping[str, str]] = lambda snapshot, proxies: {}
    last: PassResult | None = field(default=None, init=False)

    def _deployable(
        self, snapshot, desired: Desired, rendered, refused, served, check_all: bool
    ) -> dict:
        """Proxies whose rendered config may go live: already live, or passed the check."""
        options = render_options(self.settings)
        deployable = {}
        for one in desired.proxies:
            name = one.proxy.name
            if name not in rendered:
                continue
            target = planning.Deployable(one.proxy, rendered[name], planning.secret_mounts(one))
            current = planning.is_current(snapshot, self.settings.label_prefix, target, served)
            verdict = None
            # Signal mode checks in the proxy's own container before swapping the file in.
            if self.checker and (check_all or (not current and one.proxy.mode == "rolling")):
                verdict = self.checker.check(one, rendered[name].text, options)
            if verdict and not verdict.ok:
                refused[name] = f"{one.proxy.spec.kind} refused the config: {verdict.output}"
                continue
            deployable[name] = target
        return deployable

    def run_pass(self, dry_run: bool = False, check_all: bool = False) -> PassResult:
        """One pass. ``dry_run`` writes nothing; ``check_all`` checks even deployed configs.

        Every event logged during the pass carries its id; a pass that raises is logged here.
        """
        with pass_scope(new_pass_id()) as pass_id:
            try:
                return self._run_pass(pass_id, dry_run, check_all)
            except Exception as error:
                event(
                    log, "pass_failed", logging.ERROR, error=str(error), kind=type(error).__name__
                )
                raise

    def _run_pass(self, pass_id: str, dry_run: bool, check_all: bool) -> PassResult:
        started = time.monotonic()
        calls_before = self.observer.calls + self.executor.calls
        prefix = self.settings.label_prefix
        snapshot = self.observer.snapshot()
        desired = desired_state(snapshot, prefix, self.settings.mode)
        rendered, refused = render_all(desired, render_options(self.settings))
        signal_proxies = [d.proxy for d in desired.proxies if d.proxy.mode == "signal"]
        served = self.served(snapshot, signal_proxies) if signal_proxies else {}
        problems = list(desired.problems) + _signal_problems(snapshot, prefix, signal_proxies)
        deployable = self._deployable(snapshot, desired, rendered, refused, served, check_all)
        actions = planning.plan(snapshot, prefix, deployable, served, self.settings.keep_configs)
        outcomes = [] if dry_run else self.executor.run(actions, snapshot)
        result = PassResult(
            pass_id, snapshot, desired, rendered, actions, outcomes, problems, refused
        )
        result.seconds = time.monotonic() - started
        result.api_calls = self.observer.calls + self.executor.calls - calls_before
        _log_pass(result, self.last)
        self.last = result
        return result

    def desired_proxy(self, name: str) -> DesiredProxy | None:
        if not self.last:
            return None
        return next((d for d in self.last.desired.proxies if d.proxy.name == name), None)


def _signal_problems(snapshot: Snapshot, prefix: str, proxies: list[Proxy]) -> list[Problem]:
    owned = {c.name for c in snapshot.configs}
    found = []
    for proxy in proxies:
        found += planning.signal_problems(snapshot, prefix, proxy, owned)
    return found


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
