"""What one pass saw and did, as plain data (pure): for logs, metrics, `status`, the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from .acme import AcmeState
from .desired import Desired
from .labels import Problem
from .plan import Action
from .render import Rendered
from .snapshot import Snapshot


@dataclass(frozen=True)
class Outcome:
    action: Action
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class PassResult:
    """Everything one pass saw and did: for logs, metrics, `status` and the CLI's exit code."""

    pass_id: str
    snapshot: Snapshot
    desired: Desired
    rendered: dict[str, Rendered]
    actions: list[Action]
    outcomes: list[Outcome]
    problems: list[Problem]
    refused: dict[str, str]  # proxy name -> why its config was not deployed
    seconds: float = 0.0
    api_calls: int = 0
    acme: AcmeState = field(default_factory=AcmeState)  # certificates, orders, failures

    @property
    def errors(self) -> list[str]:
        failed = [f"{o.action.proxy}: {o.error}" for o in self.outcomes if not o.ok]
        return failed + [f"{proxy}: {why}" for proxy, why in self.refused.items()]

    @property
    def converged(self) -> bool:
        """Every proxy got (or already had) its desired config, and nothing failed."""
        return not self.errors
