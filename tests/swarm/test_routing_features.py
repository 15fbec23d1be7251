"""Routing features through real nginx and real HAProxy on the real Swarm (issue 16).

Each test deploys one proxy (signal mode: every change is a reload in place) and several apps
at once, so that one proxy start serves many scenarios; every scenario runs for both kinds.
Traffic goes to the proxy's published port on 127.0.0.1, or, for the IP allow list, from
client containers on the test's own overlay network to the proxy task's address there.

- ``test_traffic_split_sticky_and_failing_tasks``: weights 20/80 and Interlock 2's canary by
  task count over 400 requests each; a sticky cookie keeps 50 requests on one task and moves
  to another, without an error, once that task stops; a task that refuses connections costs
  no request (nginx and HAProxy retry on another task); HAProxy's active check takes a task
  whose /health fails out of the pool.
- ``test_redirects_default_backend_limits_and_websocket``: redirects (one hop, path kept),
  the default backend, response headers, the body size limit, the IP allow list (403/200 by
  the client's address), TLS to the tasks, and a WebSocket exchange that survives the reload
  for an unrelated new route.
- ``test_basic_auth_from_a_docker_secret`` (nginx; HAProxy refuses it with a Problem).
- ``test_tls_passthrough_by_sni`` (HAProxy beside a terminated host; nginx refuses it).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import shutil
import socket
import ssl
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from docker.types import SecretReference

from tests.bed.probes import LOOPBACK, http_get, wait_until
from tests.swarm.controlled import APP_PORT, Routed, routed

KINDS = ["nginx", "haproxy"]
LB = "com.docker.lb"


def backend(lab: Routed, suffix: str, labels: dict[str, str], replicas: int = 1, **kwargs):
    """A service of the bed's backend image with exactly these labels (no prefix added)."""
    env = ["TASK_NAME={{.Task.Name}}", *kwargs.pop("env", [])]
    service = lab.swarm.service(
        suffix,
        lab.swarm.images.backend,
        networks=[lab.network.name],
        labels=labels,
        env=env,
        mode={"Replicated": {"Replicas": replicas}},
        **kwargs,
    )
    lab.swarm.wait_running(service, replicas=replicas)
    return service


def ours(lab: Routed, **labels: str) -> dict[str, str]:
    """Our labels under the test's prefix ('__' for '.')."""
    return {lab.label(key.replace("__", ".")): value for key, value in labels.items()}


def request(
    port: int, host: str, path: str = "/", headers: dict | None = None, **kwargs
) -> http.client.HTTPResponse:
    """One request on a fresh connection; the response with its body read into ``.text``."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=kwargs.pop("timeout", 15))
    try:
        conn.request(
            kwargs.pop("method", "GET"), path, headers={"Host": host, **(headers or {})}, **kwargs
        )
        response = conn.getresponse()
        response.text = response.read().decode(errors="replace")
        return response
    finally:
        conn.close()


def task_of(body: str) -> str:
    return body.split()[0].removeprefix("task=")


def shares(port: int, host: str, requests: int = 400) -> Counter:
    """How many of ``requests`` fresh requests each service answered (by its name)."""
    seen: Counter = Counter()
    for _ in range(requests):
        status, body = http_get(port, host)
        assert status == 200, body
        seen[task_of(body).rsplit(".", 2)[0]] += 1
    return seen


def converge(lab: Routed, host: str = "", contains: str = "", status: int = 200):
    """Passes until nothing is left to do, then (with ``host``) until the proxy answers for it
    as expected: a reload in place takes effect a moment after the pass that asked for it."""
    result = lab.converge()
    if host:
        lab.swarm.wait_http(lab.port, host, status=status, contains=contains, timeout=20)
    return result, [str(p) for p in result.problems]


# ---- traffic split, sticky sessions, failing tasks --------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_traffic_split_sticky_and_failing_tasks(kind, swarm, bed):
    lab = routed(swarm, bed.docker_host, label_families="interlock,com.docker.lb")
    lab.proxy_service(kind, mode="signal")
    stable = backend(
        lab, "stable", ours(lab, hostname="canary.example.com", port="8080", weight="80")
    )
    canary = backend(
        lab, "canary", ours(lab, hostname="canary.example.com", port="8080", weight="20")
    )
    lb_hosts = {f"{LB}.hosts": "split.example.com", f"{LB}.port": str(APP_PORT)}
    one = backend(lab, "lbone", lb_hosts, replicas=1)
    three = backend(lab, "lbthree", lb_hosts, replicas=3)
    sticky = backend(
        lab,
        "sticky",
        ours(lab, hostname="sticky.example.com", port="8080", sticky_session_cookie="session"),
        replicas=3,
    )
    failing = backend(
        lab,
        "failing",
        ours(
            lab,
            hostname="failing.example.com",
            port="8080",
            health_check="/health",
            health_check_interval="300",
        ),
        replicas=3,
    )
    _, problems = converge(lab, "canary.example.com")
    assert not [p for p in problems if "rejected" in p], problems
    swarm.wait_http(lab.port, "split.example.com")
    swarm.wait_http(lab.port, "sticky.example.com")

    # Weights 80/20 and Interlock 2's canary (1 task beside 3): within 5 points over 400.
    split = shares(lab.port, "canary.example.com")
    print(f"{kind}: weights 80/20 over 400 requests -> {dict(split)}")
    assert abs(split[canary.name] / 400 - 0.20) <= 0.05, split
    assert split[stable.name] + split[canary.name] == 400
    split = shares(lab.port, "split.example.com")
    print(f"{kind}: com.docker.lb canary 1 task / 3 tasks over 400 requests -> {dict(split)}")
    assert abs(split[one.name] / 400 - 0.25) <= 0.05, split
    assert split[one.name] + split[three.name] == 400

    # Sticky: the first answer sets the cookie; with it, 50 requests reach one task.
    first = request(lab.port, "sticky.example.com")
    cookie = first.getheader("Set-Cookie") or ""
    assert first.status == 200 and cookie.startswith("session="), first.headers
    jar = {"Cookie": cookie.split(";")[0]}
    pinned = Counter(
        task_of(request(lab.port, "sticky.example.com", headers=jar).text) for _ in range(50)
    )
    assert len(pinned) == 1 and task_of(first.text) in pinned, pinned
    without = {task_of(http_get(lab.port, "sticky.example.com")[1]) for _ in range(30)}
    assert len(without) > 1, without  # without the cookie, requests spread
    (task,) = pinned
    swarm.client.containers.get(task).stop(timeout=1)  # its task ends; Swarm starts another
    moved = request(lab.port, "sticky.example.com", headers=jar)
    assert moved.status == 200 and task_of(moved.text) != task, moved.text
    converge(lab, "sticky.example.com")  # the stopped task leaves the pool
    again = {task_of(request(lab.port, "sticky.example.com", headers=jar).text) for _ in range(20)}
    assert len(again) == 1 and task not in again, again
    print(f"{kind}: sticky on {task} for 50 requests; after it stopped: {again}")

    # A task that refuses connections (its container still runs, still in the pool): no request
    # fails, the proxy retries on another task.
    containers = swarm.task_containers(failing)
    containers[0].exec_run(["touch", "/tmp/refuse"])
    wait_until(lambda: b"refuses" in containers[0].logs(), 10, message="the task refuses")
    seen = Counter(task_of(http_get(lab.port, "failing.example.com")[1]) for _ in range(30))
    assert containers[0].name not in seen and sum(seen.values()) == 30, seen

    if kind == "haproxy":  # active checks: a task whose /health fails gets no request
        containers[1].exec_run(["touch", "/tmp/unhealthy"])

        def out() -> bool:
            answers = [http_get(lab.port, "failing.example.com")[1] for _ in range(6)]
            return all(containers[1].name not in body for body in answers)

        wait_until(out, 10, message="the unhealthy task is out")
        seen = Counter(task_of(http_get(lab.port, "failing.example.com")[1]) for _ in range(30))
        assert set(seen) == {containers[2].name}, seen
        print(f"{kind}: after /health failed on {containers[1].name}: {dict(seen)}")
    del sticky


# ---- redirects, default backend, limits, WebSocket ----------------------------------------


def client_container(lab: Routed, suffix: str):
    """A container of the backend image on the test's network; returns it and its address."""
    container = lab.swarm.container(
        suffix, lab.swarm.images.backend, ["sleep", "300"], network=lab.network.name
    )
    container.reload()
    return container, container.attrs["NetworkSettings"]["Networks"][lab.network.name]["IPAddress"]


def status_from(container, address: str, host: str) -> int:
    """The status of a GET from inside ``container`` to the proxy task at ``address``:80."""
    code = (
        f"import http.client as h;c=h.HTTPConnection({address!r},80,timeout=5);"
        f"c.request('GET','/',headers={{'Host':{host!r}}});print(c.getresponse().status)"
    )
    result = container.exec_run(["python3", "-c", code])
    assert result.exit_code == 0, result.output
    return int(result.output.decode().strip())


def self_signed(host: str) -> tuple[str, str]:
    """A throw-away certificate for ``host`` and its key (PEM)."""
    key = subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName=DNS:{host}",
            "-keyout",
            "/dev/stdout",
            "-out",
            "/dev/stdout",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    cert = key[key.index("-----BEGIN CERTIFICATE-----") :]
    return cert, key[: key.index("-----BEGIN CERTIFICATE-----")]


def tls_backend(lab: Routed, suffix: str, labels: dict[str, str], host: str):
    """A backend serving HTTPS on 8443 with a self-signed certificate for ``host`` (secrets)."""
    cert, key = self_signed(host)
    secrets = [lab.swarm.secret(f"{suffix}-crt", cert), lab.swarm.secret(f"{suffix}-key", key)]
    refs = [
        SecretReference(s.id, s.name, filename=f"{suffix}-{n}.pem")
        for s, n in zip(secrets, ("crt", "key"), strict=True)
    ]
    env = [
        "PORT=8443",
        f"TLS_CERT=/run/secrets/{suffix}-crt.pem",
        f"TLS_KEY=/run/secrets/{suffix}-key.pem",
    ]
    return backend(lab, suffix, labels, env=env, secrets=refs), cert


def ws_open(port: int, host: str) -> socket.socket:
    """A WebSocket (RFC 6455) through the proxy on 127.0.0.1:``port``; fails unless 101."""
    sock = socket.create_connection((LOOPBACK, port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"
    accept = base64.b64encode(hashlib.sha1(key.encode() + guid).digest()).lower()
    assert b"sec-websocket-accept: " + accept in head.lower(), head
    return sock


def ws_echo(sock: socket.socket, text: str) -> str:
    """Send one masked text frame, read one frame back."""
    data, mask = text.encode(), os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    sock.sendall(bytes([0x81, 0x80 | len(data)]) + mask + masked)
    head = sock.recv(2)
    assert len(head) == 2 and head[0] == 0x81, head
    size = head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", sock.recv(2))[0]
    body = b""
    while len(body) < size:
        body += sock.recv(size - len(body))
    return body.decode()


@pytest.mark.parametrize("kind", KINDS)
def test_redirects_default_backend_limits_and_websocket(kind, swarm, bed):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service(kind, mode="signal")
    allowed, allowed_address = client_container(lab, "client-in")
    refused, _ = client_container(lab, "client-out")
    backend(
        lab,
        "moved",
        ours(
            lab,
            hostname="new.example.com",
            port="8080",
            redirects="old.example.com,https://new.example.com/shop;"
            "older.example.com,new.example.com,307",
        ),
    )
    fallback = backend(lab, "fallback", ours(lab, default_backend="true", port="8080"))
    limits = {
        "hostname": "limits.example.com",
        "port": "8080",
        "max_body_size": "1k",
        "response_header__X-Frame-Options": "DENY",
        "response_header__Content-Security-Policy": "default-src none",
        "read_timeout": "20s",
        "connect_timeout": "2s",
    }
    backend(lab, "limits", ours(lab, **limits))
    backend(
        lab,
        "allow",
        ours(
            lab,
            hostname="allow.example.com",
            port="8080",
            ip_allow=f"{allowed_address}/32, 2001:db8::/32",
        ),
    )
    tls, _ = tls_backend(
        lab,
        "upstream",
        ours(lab, hostname="up.example.com", port="8443", ssl_backend="true"),
        "up.example.com",
    )
    ws = backend(lab, "ws", ours(lab, hostname="ws.example.com", port="8080"))
    _, problems = converge(lab, "ws.example.com", contains=f"task={ws.name}.")
    assert not [p for p in problems if "rejected" in p], problems

    # Redirects: one hop, the path and query kept; the code as given (301 by default).
    for host, code, location in (
        ("old.example.com", 301, "https://new.example.com/shop/a/b?c=1"),
        ("older.example.com", 307, "http://new.example.com/a/b?c=1"),
    ):
        answer = request(lab.port, host, "/a/b?c=1")
        assert (answer.status, answer.getheader("Location")) == (code, location), answer.headers
    assert "-moved.1." in http_get(lab.port, "new.example.com")[1]

    # The default backend answers hosts no route serves.
    status, body = http_get(lab.port, "nowhere.example.com", "/x")
    assert status == 200 and f"task={fallback.name}." in body and "path=/x " in body, body

    # Limits: response headers on every answer; a body over 1 KiB is refused with 413.
    answer = request(lab.port, "limits.example.com")
    assert answer.status == 200 and answer.getheader("X-Frame-Options") == "DENY"
    assert answer.getheader("Content-Security-Policy") == "default-src none"
    small = request(lab.port, "limits.example.com", method="POST", body=b"x" * 1000)
    large = request(lab.port, "limits.example.com", method="POST", body=b"x" * 5000)
    assert (small.status, large.status) == (200, 413), (small.text, large.text)

    # IP allow list: by the client's own address on the overlay network.
    (address,) = swarm.task_addresses(proxy, lab.network)
    assert status_from(allowed, address, "allow.example.com") == 200
    assert status_from(refused, address, "allow.example.com") == 403
    assert http_get(lab.port, "allow.example.com")[0] == 403  # 127.0.0.1 comes via the bridge
    assert status_from(refused, address, "limits.example.com") == 200  # other routes: no list

    # TLS to the tasks (not verified: their certificate is self-signed).
    status, body = http_get(lab.port, "up.example.com", "/tls")
    assert status == 200 and f"task={tls.name}." in body and "path=/tls " in body, body

    # A WebSocket exchange survives the reload that a new, unrelated route makes.
    sock = ws_open(lab.port, "ws.example.com")
    try:
        assert ws_echo(sock, "before").endswith(" before")
        backend(lab, "unrelated", ours(lab, hostname="unrelated.example.com", port="8080"))
        converge(lab, "unrelated.example.com", contains="-unrelated.1.")  # reloaded
        echoed = ws_echo(sock, "after the reload")
        assert echoed.startswith(f"{ws.name}.") and echoed.endswith(" after the reload"), echoed
    finally:
        sock.close()


# ---- basic auth, passthrough ------------------------------------------------------------------


def htpasswd(user: str, password: str) -> str:
    """An htpasswd line in the salted SHA-1 scheme nginx reads ({SSHA})."""
    salt = os.urandom(8)
    digest = base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()
    return f"{user}:{{SSHA}}{digest}\n"


@pytest.mark.parametrize("kind", KINDS)
def test_basic_auth_from_a_docker_secret(kind, swarm, bed):
    lab = routed(swarm, bed.docker_host)
    lab.proxy_service(kind, mode="signal")
    users = swarm.secret("users", htpasswd("alice", "s3cret"))
    backend(
        lab,
        "private",
        ours(lab, hostname="private.example.com", port="8080", basic_auth_secret=users.name),
    )
    if kind == "haproxy":  # refused on HAProxy, with the reason
        _, problems = converge(lab, "private.example.com", status=404)
        assert any("basic_auth_secret" in p and "HAProxy 2.6" in p for p in problems), problems
        return
    _, problems = converge(lab, "private.example.com", status=401)
    assert not problems, problems
    good = base64.b64encode(b"alice:s3cret").decode()
    bad = base64.b64encode(b"alice:wrong").decode()
    status, body = http_get(
        lab.port, "private.example.com", headers={"Authorization": f"Basic {good}"}
    )
    assert status == 200 and "-private.1." in body, body
    assert (
        http_get(lab.port, "private.example.com", headers={"Authorization": f"Basic {bad}"})[0]
        == 401
    )


def tls_get(port: int, host: str, cafile: str, path: str = "/p") -> tuple[int, str, str]:
    """GET ``path`` over TLS to 127.0.0.1:port with SNI ``host``, verified against ``cafile``:
    (status, body, response head)."""
    context = ssl.create_default_context(cafile=cafile)
    raw = socket.create_connection((LOOPBACK, port), timeout=10)
    with context.wrap_socket(raw, server_hostname=host) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body, head


@pytest.mark.parametrize("kind", KINDS)
def test_tls_passthrough_by_sni(kind, swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    lab.proxy_service(kind, tls=True)  # rolling: certificates come with a task update anyway
    passed, cert = tls_backend(
        lab,
        "passed",
        ours(lab, hostname="pass.example.com", port="8443", ssl_passthrough="true"),
        "pass.example.com",
    )
    (tmp_path / "pass.pem").write_text(cert)
    term_cert, term_key = self_signed("term.example.com")
    (tmp_path / "term.pem").write_text(term_cert)
    crt, key = swarm.secret("term-crt", term_cert), swarm.secret("term-key", term_key)
    backend(
        lab,
        "term",
        ours(
            lab, hostname="term.example.com", port="8080", ssl_cert=crt.name, ssl_cert_key=key.name
        ),
    )
    _, problems = converge(lab)
    if kind == "nginx":
        assert any("ssl_passthrough" in p and "stream module" in p for p in problems), problems
    else:
        assert not problems, problems
        # The task's own certificate answers: the proxy passed the TLS stream through.
        status, body, _ = wait_until(
            lambda: tls_get(lab.tls_port, "pass.example.com", str(tmp_path / "pass.pem")), 30
        )
        assert status == 200 and f"task={passed.name}." in body, body
    # Beside it, a host whose TLS the proxy terminates, with its own certificate.
    status, body, _ = wait_until(
        lambda: tls_get(lab.tls_port, "term.example.com", str(tmp_path / "term.pem")), 30
    )
    assert status == 200 and "-term.1." in body, body


# ---- an Interlock 2 stack, deployed unchanged -------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
DOCKER = shutil.which("docker", path="/usr/bin") or shutil.which("docker")


def test_an_interlock_2_stack_file_deploys_unchanged_and_routes(swarm, bed, tmp_path):
    """manifests/interlock2.yml by `docker stack deploy`, through an nginx and an HAProxy proxy
    at once: hosts, port, network, context root with rewrite, TLS from its secrets (HTTP
    redirected to HTTPS), sticky cookie and redirects, as Interlock 2 read them."""
    lab = routed(swarm, bed.docker_host, label_families="interlock,com.docker.lb")
    lab.network.reload()
    ports = {}
    for kind in KINDS:
        lab.proxy_service(kind, tls=True)  # rolling: certificates come with a task update anyway
        ports[kind] = (lab.port, lab.tls_port)
    cert, key = self_signed("shop.example.com")
    (tmp_path / "shop.pem").write_text(cert)
    for name, data in (("shop.example.com.cert", cert), ("shop.example.com.key", key)):
        swarm.client.secrets.create(name=name, data=data, labels=swarm._labels(None))
    stack = f"{swarm.id}-shop"
    env = {
        **os.environ,
        "DOCKER_HOST": bed.docker_host,
        "APP_IMAGE": swarm.images.backend,
        "PROXY_NETWORK": lab.network.name,
    }
    deploy = subprocess.run(
        [DOCKER, "stack", "deploy", "-c", str(ROOT / "manifests/interlock2.yml"), stack],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert deploy.returncode == 0, deploy.stderr
        web, api = (swarm.client.services.get(f"{stack}_{name}") for name in ("web", "api"))
        swarm.wait_running(web, replicas=2)
        swarm.wait_running(api, replicas=1)
        _, problems = converge(lab)
        assert not problems, problems
        for kind, (port, tls_port) in ports.items():
            status, body, head = wait_until(
                lambda p=tls_port: tls_get(p, "shop.example.com", str(tmp_path / "shop.pem")), 60
            )
            assert status == 200 and f"task={stack}_web." in body, (kind, body)
            assert "\r\nset-cookie: session=" in head.lower(), head  # sticky: the cookie is set
            answer = request(port, "shop.example.com", "/x?y=1")
            location = (answer.status, answer.getheader("Location"))
            assert location == (301, "https://shop.example.com/x?y=1"), (kind, answer.headers)
            moved = request(port, "old.shop.example.com", "/a")
            assert moved.getheader("Location") == "https://shop.example.com/a", kind
            cafile = str(tmp_path / "shop.pem")
            status, body, _ = tls_get(tls_port, "shop.example.com", cafile, "/api/users")
            assert status == 200 and f"task={stack}_api." in body and "path=/users " in body
            print(f"{kind}: Interlock 2 stack routed ({body.split()[0]})")
    finally:
        subprocess.run([DOCKER, "stack", "rm", stack], env=env, capture_output=True, timeout=60)
