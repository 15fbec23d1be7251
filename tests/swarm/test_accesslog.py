"""Access logs and request ids through real nginx and real HAProxy on the Swarm.

One scenario serves both proxies (rolling mode, published on 127.0.0.1) and three routed
services: one over TLS too, one that turns its access log off by label. Through each proxy: a
request with and one without ``X-Request-ID`` give one JSON line each on the proxy's stdout with
the same fields, and the id in the line is the one the backend got (the bed's backend echoes it
as ``X-Seen-Request-ID``); over HTTPS the line names the TLS version; hostile requests on a raw
socket (quotes, backslashes, control characters, bytes that are not UTF-8, a forged line after a
newline, a path longer than the cut) leave every line one valid JSON object below PIPE_BUF. Then
``INTERLOCK_ACCESS_LOG=text`` gives the classic line and ``off`` none, while request ids still
reach the backend.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from docker.models.services import Service

from controller.app import Controller
from tests.bed.probes import wait_until
from tests.swarm.controlled import Routed, routed
from tests.swarm.test_tls import https_get, self_signed

HOST = "logs.example.com"
QUIET = "quiet.example.com"
SECURE = "secure.example.com"  # the name test_tls's certificate is for
FIELDS = {
    "time",
    "client",
    "host",
    "method",
    "path",
    "status",
    "bytes",
    "request_time",
    "upstream",
    "upstream_time",
    "route",
    "request_id",
    "tls_version",
}
PIPE_BUF = 4096
KINDS = ("nginx", "haproxy")


@dataclass
class Edge:
    kind: str
    service: Service
    port: int
    tls_port: int = 0


def proxies(lab: Routed, tls: bool = False) -> list[Edge]:
    """Both proxies of the scenario, each published on its own port (and its TLS port)."""
    edges = []
    for kind in KINDS:
        service = lab.proxy_service(kind, tls=tls)
        edges.append(Edge(kind, service, lab.port, lab.tls_port if tls else 0))
    return edges


def converge(lab: Routed, edges: list[Edge], timeout: float = 120.0) -> None:
    """Passes until one has nothing to do, each proxy's rolling update finished."""

    def settled() -> bool:
        result = lab.controller.reconciler.run_pass()
        assert not result.errors, result.errors
        for edge in edges:
            lab.swarm.wait_updated(edge.service, timeout=timeout)
        return not result.actions

    wait_until(settled, timeout, 0.2, "a pass with nothing to do")


def use_setting(lab: Routed, edges: list[Edge], **settings: str) -> None:
    """The same namespace driven by a controller with other settings (as after a restart)."""
    lab.settings = lab.settings.model_copy(update=settings)
    lab.controller = Controller.from_settings(lab.settings, lab.swarm.client.api)
    converge(lab, edges)


def request(port: int, host: str, path: str, request_id: str | None = None):
    """One GET to 127.0.0.1:port; (status, body, the ids the backend saw)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Host": host, **({"X-Request-ID": request_id} if request_id else {})}
    try:
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        body = answer.read().decode(errors="replace")
        return answer.status, body, answer.headers.get_all("X-Seen-Request-ID") or []
    finally:
        connection.close()


def stdout_lines(lab: Routed, edge: Edge) -> list[bytes]:
    """Every line the proxy's running task wrote to stdout (its error log is on stderr)."""
    (container,) = lab.swarm.task_containers(edge.service)
    return container.logs(stdout=True, stderr=False).splitlines()


def parsed(lines: list[bytes]) -> list[dict]:
    """Each line as strict UTF-8 JSON with exactly the agreed fields: anything else fails."""
    records = []
    for line in lines:
        assert len(line) < PIPE_BUF, f"{len(line)}-byte line: {line[:200]!r}"
        record = json.loads(line.decode("utf-8"))  # strict: bytes that are not UTF-8 raise
        assert isinstance(record, dict) and set(record) == FIELDS, line
        records.append(record)
    return records


def logged(lab: Routed, edge: Edge, path: str, timeout: float = 20.0) -> dict:
    """The one access-log line of the request for ``path`` (Docker writes logs asynchronously)."""

    def found():
        hits = [r for r in parsed(stdout_lines(lab, edge)) if r["path"] == path]
        assert len(hits) <= 1, hits
        return hits[0] if hits else None

    return wait_until(found, timeout, 0.25, f"{edge.kind}: a log line for {path}")


def check_ids_and_fields(lab: Routed, edge: Edge, app: Service) -> dict[str, dict]:
    """A request with and one without X-Request-ID: one line each, the backend saw the id."""
    given = f"client-{uuid.uuid4().hex[:12]}"
    tag = uuid.uuid4().hex[:8]
    with_id, without_id = f"/with-id-{tag}?q=1", f"/without-id-{tag}"
    status, body, seen_given = request(edge.port, HOST, with_id, given)
    assert status == 200 and f"task={app.name}." in body, body
    status, body, seen_made = request(edge.port, HOST, without_id)
    assert status == 200, body
    assert seen_given == [given], seen_given  # passed through, exactly one header
    assert len(seen_made) == 1 and len(seen_made[0]) == 32, seen_made  # made by the proxy
    int(seen_made[0], 16)
    (address,) = lab.swarm.task_addresses(app, lab.network)
    lines = {path: logged(lab, edge, path) for path in (with_id, without_id)}
    for path, rid in ((with_id, given), (without_id, seen_made[0])):
        line = lines[path]
        assert line["request_id"] == rid, line
        assert line["route"] == app.name, line
        assert line["upstream"] == f"{address}:8080", line
        assert (line["host"], line["method"], line["status"]) == (HOST, "GET", 200), line
        assert line["tls_version"] == "-", line
        assert line["client"].count(".") == 3, line  # an IPv4 address
        for number in ("bytes", "request_time", "upstream_time"):
            assert isinstance(line[number], int) and line[number] >= 0, line
        assert line["bytes"] > len(body)  # headers and body, as sent to the client
        assert time.time() - _epoch(line["time"]) < 300, line
    return lines


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


# Each request goes on its own connection; what the proxy answers does not matter, only what it
# logs. A newline in the request line ends it: the rest must never become a line of its own.
HOSTILE = [
    b'GET /q"uo\\te?x="y"&z=\\u0022 HTTP/1.1\r\nHost: HOST\r\n\r\n',
    b"GET /ctl\x01\x1b[31m\x7f HTTP/1.1\r\nHost: HOST\r\n\r\n",
    b"GET /bytes\xff\xfe/caf\xc3\xa9 HTTP/1.1\r\nHost: HOST\r\n\r\n",
    b'GET /nl\n{"forged":1} HTTP/1.1\r\nHost: HOST\r\n\r\n',
    b'GET /nl2\r\n{"forged":2}\r\nHost: HOST\r\n\r\n',
    b'GET /rid HTTP/1.1\r\nHost: HOST\r\nX-Request-ID: a"b\x01\x7f\\c\r\n\r\n',
    b'GET /rid2 HTTP/1.1\r\nHost: HOST\r\nX-Request-ID: x\r\n{"forged":3}\r\n\r\n',
    b'GET /host HTTP/1.1\r\nHost: "ev\\il\x01\x1bhost\xff\r\n\r\n',
    b"GET /host2 HTTP/1.1\r\nHost: " + b'"' * 3000 + b"\r\n\r\n",
    b'GET /fold HTTP/1.1\r\nHost: HOST\r\nX-Request-ID: ok\r\n \x01{"forged":4}"\r\n\r\n',
    b"GET /long" + b'"' * 3000 + b" HTTP/1.1\r\nHost: HOST\r\n\r\n",
    b"GET /long2" + b"\\/" * 1500 + b" HTTP/1.1\r\nHost: HOST\r\n\r\n",
    b"GET /u\xe2\x80\xa8x\xf0\x9f\x98\x80 HTTP/1.1\r\nHost: HOST\r\n\r\n",
    b'G"E\\T /method HTTP/1.1\r\nHost: HOST\r\n\r\n',
]


def send_raw(port: int, data: bytes) -> bytes:
    """One request on a raw socket to 127.0.0.1; the status line of the answer, if any."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while b"\r\n" not in answer and (chunk := sock.recv(4096)):
                answer += chunk
        except OSError:
            pass
    return answer.split(b"\r\n", 1)[0]


def check_hostile(lab: Routed, edge: Edge) -> None:
    before = len(stdout_lines(lab, edge))
    answers = [send_raw(edge.port, raw.replace(b"HOST", HOST.encode())) for raw in HOSTILE]
    marker = f"/after-hostile-{uuid.uuid4().hex[:8]}"
    assert request(edge.port, HOST, marker)[0] == 200
    logged(lab, edge, marker)
    lines = stdout_lines(lab, edge)[before:]
    records = parsed(lines)  # every line: one JSON object, the agreed fields, < PIPE_BUF
    assert not [r for r in records if "forged" in json.dumps(r) and "{" not in r["path"]]
    assert 1 < len(records) <= len(HOSTILE) + 1, records
    longest = max(len(line) for line in lines)
    for record in records:
        print(
            f"  {edge.kind} {record['status']} {record['method']!r} {record['path'][:60]!r}"
            f" host={record['host'][:40]!r} id={record['request_id']}"
        )
    print(
        f"{edge.kind}: {len(HOSTILE)} hostile requests -> {len(records) - 1} log lines, "
        f"longest {longest} bytes; answers {[a.decode(errors='replace')[9:12] for a in answers]}"
    )


def check_tls(lab: Routed, edge: Edge, secure: Service, cafile: str) -> None:
    """Over HTTPS the line names the TLS version (over plain HTTP it is "-")."""
    path = f"/over-tls-{uuid.uuid4().hex[:8]}"
    status, body = https_get(edge.tls_port, SECURE, cafile, path)
    assert status == 200 and f"task={secure.name}." in body, body
    line = logged(lab, edge, path)
    assert line["tls_version"] in ("TLSv1.2", "TLSv1.3"), line
    assert (line["route"], line["host"], line["status"]) == (secure.name, SECURE, 200), line


def check_quiet(lab: Routed, edge: Edge, quiet: Service) -> None:
    """The service labelled off is served and gets its request id, but never logged."""
    status, body, seen = request(edge.port, QUIET, "/quiet-path")
    assert status == 200 and f"task={quiet.name}." in body and len(seen) == 1, (status, body)
    marker = f"/after-quiet-{uuid.uuid4().hex[:8]}"
    assert request(edge.port, HOST, marker)[0] == 200
    logged(lab, edge, marker)
    records = parsed(stdout_lines(lab, edge))
    assert not [r for r in records if r["route"] == quiet.name or r["host"] == QUIET], records


def test_access_logs_and_request_ids_through_nginx_and_haproxy(swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    edges = proxies(lab, tls=True)
    app = lab.app("web", hostname=HOST, port="8080")
    quiet = lab.app("quiet", hostname=QUIET, port="8080", access_log="false")
    cert, key, cafile = self_signed(tmp_path)
    secure = lab.app(
        "secure",
        hostname=SECURE,
        port="8080",
        ssl_cert=swarm.secret("crt", cert).name,
        ssl_cert_key=swarm.secret("key", key).name,
    )
    converge(lab, edges)
    for edge in edges:
        swarm.wait_http(edge.port, HOST, contains=f"task={app.name}.", timeout=60)

    lines = {edge.kind: check_ids_and_fields(lab, edge, app) for edge in edges}
    for edge in edges:
        check_tls(lab, edge, secure, cafile)
        check_hostile(lab, edge)
        check_quiet(lab, edge, quiet)
    for kind, got in lines.items():
        for line in got.values():
            print(f"{kind}: {json.dumps(line)}")

    use_setting(lab, edges, access_log="text")
    for edge in edges:
        given = f"text-{uuid.uuid4().hex[:12]}"
        assert request(edge.port, HOST, "/classic", given)[2] == [given]

        def text_line(edge: Edge = edge, given: str = given) -> bytes | None:
            hits = [ln for ln in stdout_lines(lab, edge) if f"request_id={given}".encode() in ln]
            return hits[0] if hits else None

        line = wait_until(text_line, 20, 0.25, f"{edge.kind}: a text line")
        print(f"{edge.kind} text: {line.decode(errors='replace')}")
        assert b"GET /classic HTTP/1.1" in line and f"route={app.name}".encode() in line
        assert not line.startswith(b"{")

    use_setting(lab, edges, access_log="off")
    for edge in edges:
        for number in range(5):
            given = f"off-{number}-{uuid.uuid4().hex[:8]}"
            assert request(edge.port, HOST, f"/unlogged-{number}", given)[2] == [given]
    time.sleep(2)  # what Docker would still write has had time to arrive
    for edge in edges:
        assert stdout_lines(lab, edge) == [], f"{edge.kind} logged with INTERLOCK_ACCESS_LOG=off"
