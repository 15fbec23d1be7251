"""The agents' API on 127.0.0.1 (a real HTTP server and clients), and the agent's own checks of
what an answer asks of it (pure). No engine: the board is plain state."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import socket
import threading
import time

import pytest

from controller.agent import Agent, Interrupted, LocalProxy, local_proxies, refusal
from controller.agentapi import AgentCollector, authorised, read_token, serve_agents
from controller.board import Board
from controller.logs import fields_of
from controller.plan import PushConfig
from controller.settings import Settings
from controller.vocabulary import Vocabulary
from tests import builders as b

TOKEN = "s3cret-token-0123456789abcdef"
NGINX = {"interlock.ext.name": "nginx"}
TEXT = "events {}\n"
DIGEST = hashlib.sha256(TEXT.encode()).hexdigest()


@pytest.fixture
def api(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings(
        agent_port=1, agent_address="127.0.0.1", agent_token_file=str(token_file), agent_wait=5
    )
    board = Board("interlock")
    agents = serve_agents(board, settings.model_copy(update={"agent_port": 0}))
    yield agents, board, settings.model_copy(update={"agent_port": agents.port})
    agents.stop()


def request(port: int, method: str, path: str, body=None, token: str | None = TOKEN, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, data, headers)
    answer = conn.getresponse()
    status, raw = answer.status, answer.read()
    conn.close()
    return status, json.loads(raw) if raw else None


def report(wait: float = 0.0, served=None) -> dict:
    labels = {**NGINX, "com.docker.swarm.node.id": "n1"}
    return {
        "node": "n1",
        "hostname": "node1",
        "containers": [b.container("c1", "edge", labels)],
        "served": served or {},
        "wait": wait,
    }


def test_without_the_token_401_and_a_log_line_naming_the_peer_not_the_token(api, caplog):
    agents, _, _ = api
    caplog.set_level(logging.WARNING)
    assert request(agents.port, "GET", "/v1/status", token=None)[0] == 401
    assert request(agents.port, "POST", "/v1/sync", report(), token="wrong-" + TOKEN)[0] == 401
    assert request(agents.port, "GET", "/v1/status", token=TOKEN[:-1])[0] == 401
    said = "\n".join(f"{r.getMessage()} {fields_of(r)}" for r in caplog.records)
    assert "127.0.0.1" in said and "agent_unauthorised" in said
    assert TOKEN not in said and TOKEN[:-1] not in said
    assert agents.server.stats.results["unauthorised"] == 3


def test_authorised_compares_the_whole_token():
    assert authorised(f"Bearer {TOKEN}", TOKEN)
    assert authorised(f"bearer {TOKEN}", TOKEN)
    assert not authorised(f"Basic {TOKEN}", TOKEN)
    assert not authorised(f"Bearer {TOKEN}x", TOKEN)
    assert not authorised("", TOKEN) and not authorised(None, TOKEN)


def test_a_token_file_that_is_missing_or_short_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(RuntimeError, match="INTERLOCK_AGENT_TOKEN_FILE"):
        read_token(str(tmp_path / "absent"))
    (tmp_path / "short").write_text("abc")
    with pytest.raises(RuntimeError, match="at least 16"):
        read_token(str(tmp_path / "short"))


def test_a_sync_answers_at_once_when_a_config_is_wanted(api):
    agents, board, _ = api
    request(agents.port, "POST", "/v1/sync", report())
    board.push(PushConfig("edge", "nginx", "c1", "/etc/nginx/nginx.conf", TEXT, DIGEST))
    started = time.monotonic()
    status, answer = request(agents.port, "POST", "/v1/sync", report(wait=5))
    assert status == 200 and time.monotonic() - started < 1
    (config,) = answer["configs"]
    assert (config["container"], config["digest"], config["text"]) == ("c1", DIGEST, TEXT)
    # Once served, the same report waits its full time and gets nothing.
    started = time.monotonic()
    status, answer = request(agents.port, "POST", "/v1/sync", report(1, {"c1": DIGEST}))
    assert (status, answer) == (200, {"configs": []}) and time.monotonic() - started >= 0.9


def test_a_held_sync_answers_as_soon_as_the_controller_wants_a_config(api):
    agents, board, _ = api
    answers: list = []
    client = threading.Thread(
        target=lambda: answers.append(request(agents.port, "POST", "/v1/sync", report(wait=5)))
    )
    started = time.monotonic()
    client.start()
    time.sleep(0.5)
    assert board.status()["nodes"][0]["connected"]
    board.push(PushConfig("edge", "nginx", "c1", "/etc/nginx/nginx.conf", TEXT, DIGEST))
    client.join(5)
    took = time.monotonic() - started
    assert answers[0][0] == 200 and len(answers[0][1]["configs"]) == 1
    assert 0.5 <= took < 1.5, took


def test_bad_requests_get_400_or_404(api):
    agents, _, _ = api
    assert request(agents.port, "POST", "/v1/sync", {"node": "n 1"})[0] == 400
    assert request(agents.port, "POST", "/v1/other", report())[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", agents.port, timeout=5)
    conn.request("POST", "/v1/sync", b"{not json", {"Authorization": f"Bearer {TOKEN}"})
    assert conn.getresponse().status == 400


def test_connections_beyond_the_cap_are_turned_away_at_once(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    settings = Settings(
        agent_address="127.0.0.1",
        agent_token_file=str(token_file),
        agent_wait=3,
        agent_max_connections=2,
    )
    agents = serve_agents(Board("interlock"), settings)
    try:
        idle = [socket.create_connection(("127.0.0.1", agents.port)) for _ in range(2)]
        time.sleep(0.3)
        started = time.monotonic()
        status, _ = request(agents.port, "GET", "/v1/status", timeout=5)
        assert status == 503 and time.monotonic() - started < 1
        for conn in idle:
            conn.close()
        time.sleep(0.3)
        assert request(agents.port, "GET", "/v1/status")[0] == 200
    finally:
        agents.stop()


def test_metrics_per_node(api):
    agents, board, _ = api
    request(agents.port, "POST", "/v1/sync", report(served={"c1": DIGEST}))
    board.desired = {"c1": DIGEST}
    families = {
        f.name: f for f in AgentCollector(board, lambda: agents.server.stats.results).collect()
    }
    states = {s.labels["state"]: s.value for s in families["interlock_agent_containers"].samples}
    assert states == {"in_sync": 1, "out_of_sync": 0, "refused": 0, "unknown": 0}
    (age,) = families["interlock_agent_report_age_seconds"].samples
    assert age.labels == {"node": "node1"} and age.value < 5


# -- the agent's side ---------------------------------------------------------------------------


def local(**labels: str) -> dict[str, LocalProxy]:
    return local_proxies([b.container("c1", "edge", {**NGINX, **labels})], Vocabulary("interlock"))


def config(**changes) -> dict:
    return {
        "container": "c1",
        "kind": "nginx",
        "path": "/etc/nginx/nginx.conf",
        "text": TEXT,
        "digest": DIGEST,
        **changes,
    }


def test_the_agent_applies_only_what_the_container_labels_allow():
    here = local()
    assert refusal(config(), here) == ""
    assert "not a running proxy container" in refusal(config(container="c2"), here)
    assert "kind" in refusal(config(kind="haproxy"), here)
    assert "path" in refusal(config(path="/etc/passwd"), here)
    assert "digest" in refusal(config(text="other"), here)
    assert "digest" in refusal(config(digest="../x"), here)
    moved = local(**{"interlock.ext.config_path": "/srv/nginx.conf"})
    assert refusal(config(path="/srv/nginx.conf"), moved) == ""
    assert "path" in refusal(config(), moved)


def test_containers_without_the_label_or_of_an_unknown_kind_are_not_proxies():
    words = Vocabulary("interlock")
    raw = [
        b.container("c1", "app", {}),
        b.container("c2", "odd", {"interlock.ext.name": "apache"}),
        {**b.container("c3", "edge", NGINX), "State": "exited"},
    ]
    assert local_proxies(raw, words) == {}


class NoEngine:
    """The agent's engine calls these tests make: none but info()."""

    def info(self) -> dict:
        return {"ID": "ENGINE", "Name": "node1", "Swarm": {"NodeID": "n1"}}


def test_a_local_change_interrupts_a_held_request_at_once(api):
    agents, _, settings = api
    agent = Agent(
        NoEngine(),
        settings.model_copy(update={"agent_url": f"http://127.0.0.1:{agents.port}"}),
        TOKEN,
    )
    outcome: list = []

    def poll() -> None:
        try:
            outcome.append(agent.sync(report(wait=5)))
        except Interrupted:
            outcome.append("interrupted")

    started = time.monotonic()
    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    agent.interrupt()
    thread.join(5)
    assert outcome == ["interrupted"] and time.monotonic() - started < 1.5


def test_the_agent_is_refused_with_a_wrong_token(api):
    agents, _, settings = api
    url = f"http://127.0.0.1:{agents.port}"
    agent = Agent(NoEngine(), settings.model_copy(update={"agent_url": url}), "x" * 20)
    with pytest.raises(RuntimeError, match="refused the token"):
        agent.sync(report())


def test_a_wake_hint_wakes_the_loop(api):
    agents, board, _ = api
    woken: list = []
    board.on_change = lambda: woken.append(1)
    assert request(agents.port, "POST", "/v1/wake", {}, token=None)[0] == 401
    assert not woken
    assert request(agents.port, "POST", "/v1/wake", {})[0] == 200
    assert woken == [1]
