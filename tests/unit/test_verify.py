"""The check stage: a refused config is attributed to its services, the rest goes live."""

from __future__ import annotations

from controller.desired import desired_state
from controller.render import RenderOptions
from controller.snapshot import snapshot_from_api
from controller.verify import CHECK_LABEL, Verdict, Verifier, culprits
from tests import builders as b

P = "interlock"


def test_culprits_finds_every_bad_service_and_keeps_the_rest():
    services = [f"s{i}" for i in range(40)]
    bad = {"s3", "s17", "s39"}
    calls = []

    def passes(kept):
        calls.append(tuple(kept))
        return not bad & set(kept)

    assert culprits(services, passes) == ["s3", "s17", "s39"]
    assert len(calls) <= 3 * 7 + 4  # about k * log2(n), not n


def test_culprits_blames_the_newer_of_two_services_that_clash():
    def passes(kept):
        return not {"old", "new"} <= set(kept)

    assert culprits(["a", "old", "b", "new", "c"], passes) == ["new"]


def test_culprits_is_none_when_even_no_service_passes():
    assert culprits(["a", "b"], lambda kept: False) is None
    assert culprits([], lambda kept: True) == []


class RefusingChecker:
    """Stands in for the proxy binary: refuses any config that names a poisoned host."""

    def __init__(self, poison: str) -> None:
        self.poison, self.checked = poison, 0

    def check(self, desired, rendered, options):
        self.checked += 1
        if self.poison in rendered.text:
            return Verdict(False, f'nginx: [emerg] bad host "{self.poison}"')
        return Verdict(True, "")


def _desired(n=6):
    services = [b.service("p1", "edge", {f"{P}.ext.name": "nginx"})]
    for i in range(n):
        labels = {f"{P}.hostname": f"h{i}.example.com", f"{P}.port": "80"}
        services.append(b.service(f"a{i}", f"app{i}", labels, created=f"2026-01-01T00:00:0{i}Z"))
    tasks = [b.task(f"t{i}", f"a{i}", f"10.0.0.{i + 2}") for i in range(n)]
    return desired_state(snapshot_from_api(services, tasks, [b.network("net1")], []), P)


def test_a_refused_service_is_left_out_with_the_proxys_words_and_the_rest_goes_live():
    (edge,) = _desired().proxies
    checker = RefusingChecker("h4.example.com")
    verified = Verifier(RenderOptions(), checker).verify(edge, lambda text: True)
    assert verified.rendered is not None and verified.refused == ""
    assert "h4.example.com" not in verified.rendered.text
    assert "h5.example.com" in verified.rendered.text
    assert [b.service for b in verified.desired.backends] == [f"app{i}" for i in (0, 1, 2, 3, 5)]
    (problem,) = verified.problems
    assert (problem.service, problem.label, problem.proxy) == ("app4", CHECK_LABEL, "edge")
    assert 'bad host "h4.example.com"' in problem.reason


def test_the_attribution_is_remembered_and_live_configs_are_not_checked():
    (edge,) = _desired().proxies
    checker = RefusingChecker("h4.example.com")
    verifier = Verifier(RenderOptions(), checker)
    verifier.verify(edge, lambda text: True)
    first = checker.checked
    again = verifier.verify(edge, lambda text: True)
    assert again.problems and checker.checked == first + 2  # the whole, then the rest: no search
    live = verifier.verify(edge, lambda text: False)
    assert live.problems == () and checker.checked == first + 2


def test_a_config_refused_without_any_service_is_held_back_whole():
    (edge,) = _desired().proxies
    verified = Verifier(RenderOptions(), RefusingChecker("worker_processes")).verify(
        edge, lambda text: True
    )
    assert verified.rendered is None and "worker_processes" in verified.refused
