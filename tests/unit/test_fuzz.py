"""Property-based audit of the pure pass: hostile labels never break it, nor anyone else's routes.

Each example is a Swarm of an nginx and an HAProxy proxy, a few *good* services (valid labels,
hosts of their own, TLS secrets that exist) and a few *hostile* ones (unicode, control characters,
``;{}#"'$\\```, huge values, many aliases and certificates, duplicate hosts, unknown keys). On
every example:

- ``desired_state`` and ``render`` never raise, and every problem reads as one printable line;
- every rendered line is a line of the template, its ``{{ }}`` holes filled with safe tokens
  (the shapes are read from the template itself), and the number of server blocks, rules and
  backends is what the desired routes predict;
- every good service is routed on both proxies, with every host it names;
- every rendered config passes the real ``nginx -t`` / ``haproxy -c`` (with stand-in certificates
  at the secrets' paths). These checks are batched after the examples and run in parallel, so
  the test stays at a few seconds; a failure names the example's labels.

Hostile values are mostly valid values pushed just over their grammar's edge (a newline before a
dot, other scripts' digits, fullwidth letters, a value repeated a thousand times), where parsers
slip; two explicit examples carry 40 certificate pairs and a 253-character host with 1,000
aliases. A second, cheaper property runs 300 single-service label sets through the grammar
alone: whatever it accepts, the renderer's own wall accepts too (against the old grammar it finds
the newline host and the superscript interval every run; the whole-pass one, at 60 examples, is
for what only the whole pass and the real binaries show).
"""

from __future__ import annotations

import re
import string
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller import checkcert
from controller.desired import DesiredProxy, desired_state
from controller.grammar import HEADER_VALUE_CHARS
from controller.kinds import KINDS
from controller.labels import parse_app
from controller.render import RenderOptions, _template_dir, render, safe_token
from controller.snapshot import snapshot_from_api
from tests import builders as b
from tests.unit.test_render import real_check

P = "interlock"
MAX_EXAMPLES = 60
SECRETS = [f"secret-{i}" for i in range(48)]  # exist in every snapshot: good TLS uses these

# ---- label values ---------------------------------------------------------------------------

HEADER_VALUE_CHARS_LIST = string.ascii_letters + string.digits + " ._~:/=,;+*()?!@&-"
HOSTILE_CHARS = ";{}#\"'$\\`\n\r\t\x00\x1b \u2028\uff41\u0661\u00b2\u212a/.:-_~*?%&|<>()[]=,@!^+"
KNOWN_SUFFIXES = [
    "hostname",
    "domain",
    "alias_domain",
    "alias_domain.1",
    "alias_domain.22",
    "port",
    "network",
    "context_root",
    "context_root_rewrite",
    "balance_algorithm",
    "ext.service_cluster",
    "ssl",
    "ssl_only",
    "ssl_cert",
    "ssl_cert_key",
    "websocket_endpoint",
    "health_check",
    "health_check_interval",
    "share_host",
    "backend_option.1",
    "ssl_backend",
    "ssl_backend_tls_verify",
    "ssl_passthrough",
    "weight",
    "sticky_session_cookie",
    "redirects",
    "default_backend",
    "connect_timeout",
    "read_timeout",
    "max_body_size",
    "ip_allow",
    "response_header.X-Test",
    "response_header.Set-Cookie",
    "basic_auth_secret",
]

# Plain text strategies mapped into the grammar: far cheaper to draw than from_regex.
label_part = st.text(alphabet=string.ascii_lowercase + string.digits + "-", max_size=63).map(
    lambda s: s.strip("-") or "x"
)
segment = st.text(alphabet=string.ascii_letters + string.digits + "._~-", min_size=1, max_size=24)
segment = segment.map(lambda s: s if s.strip(".") else "x")
url_path = st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))

hostile_text = st.one_of(
    st.text(alphabet=HOSTILE_CHARS + "az09", max_size=40),
    st.text(max_size=24),  # any unicode, surrogates excluded by hypothesis
    st.builds(
        lambda c, n: c * n, st.sampled_from([*HOSTILE_CHARS, "a", "9"]), st.integers(250, 10_000)
    ),  # huge
    st.builds(  # a valid-looking value with one hostile character in it
        lambda v, c, i: v[:i] + c + v[i:],
        st.sampled_from(["web.example.com", "8080", "/app", "true", "net1", "1500"]),
        st.sampled_from(HOSTILE_CHARS),
        st.integers(0, 15),
    ),
    st.sampled_from(["", " ", "\n", "0", "65536", "/", "..", "-1", "\u0661\u0662", "1e3"]),
)
hostile_key = st.one_of(
    st.sampled_from(KNOWN_SUFFIXES),
    st.text(alphabet=HOSTILE_CHARS + "abz", min_size=1, max_size=12),
)


def good_host(index: int, parts: list[str]) -> str:
    """A valid host of its own (``g<index>.`` first), 253 characters at most."""
    host = ".".join([f"g{index}", *parts, "example.com"])
    while len(host) > 253:
        parts = parts[:-1]
        host = ".".join([f"g{index}", *parts, "example.com"])
    return host


@st.composite
def good_labels(draw, index: int) -> dict[str, str]:
    """Valid labels in every form the grammar allows, on hosts no other service names."""
    host = good_host(index, draw(st.lists(label_part, max_size=4)))
    labels: dict[str, str] = {}
    if draw(st.booleans()):
        labels["hostname"] = draw(st.sampled_from([host, host.upper(), f" {host}\n"]))
    else:
        first, _, rest = host.partition(".")
        labels["hostname"], labels["domain"] = first, rest
    many = draw(st.booleans())
    for i in range(draw(st.integers(0, 150)) if many else draw(st.integers(0, 3))):
        alias = f"a{i}.{host}"
        if len(alias) <= 253:
            labels[f"alias_domain.{i}"] = alias
    if draw(st.booleans()):
        labels["alias_domain"] = host  # a duplicate of the main host: still one route
    labels["port"] = str(draw(st.integers(1, 65535)))
    optional = {
        "context_root": url_path,
        "context_root_rewrite": st.sampled_from(["true", "false", "1", "no", "YES"]),
        "balance_algorithm": st.sampled_from(["roundrobin", "leastconn", "source", "random"]),
        "health_check": url_path,
        "health_check_interval": st.integers(100, 3_600_000).map(str),
        "websocket_endpoint": url_path,
        "network": st.just("net1"),
        "weight": st.integers(0, 100).map(str),
        "sticky_session_cookie": st.from_regex(r"[A-Za-z0-9_]{1,64}", fullmatch=True),
        "connect_timeout": st.sampled_from(["1", "500ms", "2m", "1h"]),
        "read_timeout": st.sampled_from(["60", "90s", "24h"]),
        "max_body_size": st.sampled_from(["1", "1k", "10m", "1024g"]),
        "ip_allow": st.sampled_from(["10.0.0.0/8", "192.168.1.1, ::1", "2001:db8::/32 10.1.2.3"]),
        "response_header.X-Test": st.text(
            alphabet=HEADER_VALUE_CHARS_LIST, min_size=1, max_size=40
        ).map(lambda v: v.strip() or "x"),
        "ssl_backend": st.sampled_from(["true", "false"]),
        # true makes nginx load the system's CA bundle for each of the service's hosts (about
        # 0.1 s each, OpenSSL 3): drawn rarely, never with many hosts (see below)
        "ssl_backend_tls_verify": st.sampled_from(["false", "false", "false", "true"]),
        "redirects": st.sampled_from(["r", "s"]).map(
            lambda r: f"{r}.{host},https://{host}/x;{r}2.{host},{host},307"
        ),
    }
    for key, values in optional.items():
        if draw(st.booleans()):
            labels[key] = draw(values)
    if index == 0 and draw(st.booleans()):
        labels["default_backend"] = "true"
    if many:
        labels.pop("ssl_backend_tls_verify", None)
    if not many and draw(st.booleans()):  # nginx loads a certificate per host: ~2 ms each
        cert, key = draw(st.lists(st.sampled_from(SECRETS), min_size=2, max_size=2, unique=True))
        labels |= {"ssl_cert": cert, "ssl_cert_key": key}
        labels["ssl_only"] = draw(st.sampled_from(["true", "false"]))
    return {f"{P}.{k}": v for k, v in labels.items()}


EDGE_CHARS = ["\n", "\r", "\x00", " ", ";", "\u2028", "\u212a", "\uff0e"]
ENDINGS = ["\n", "\n\n", "\nlisten 81;", "\x00", " ;", "\u2028", "\t#", "\r", "}"]
other_digit = st.characters(categories=("Nd", "No"), exclude_characters="0123456789")


@st.composite
def mutated(draw, value: str) -> str:
    """A valid value pushed just over its grammar's edge, where parsers go wrong."""
    how = draw(st.sampled_from(["edge", "insert", "end", "digits", "fullwidth", "huge", "any"]))
    if how in ("edge", "insert"):  # edge: next to a separator, where "$" and split() slip
        edges = {0, len(value)} | {i + d for i, c in enumerate(value) if c in "./" for d in (0, 1)}
        if how == "edge":
            at, char = draw(st.sampled_from(sorted(edges))), draw(st.sampled_from(EDGE_CHARS))
        else:
            at, char = draw(st.integers(0, len(value))), draw(st.sampled_from(HOSTILE_CHARS))
        return value[:at] + char + value[at:]
    if how == "end":
        return value + draw(st.sampled_from(ENDINGS))
    if how == "digits":  # Arabic-Indic, superscript, fullwidth... digits in place of ASCII ones
        return "".join(draw(other_digit) if c in string.digits else c for c in value) or "\u00b2"
    if how == "fullwidth":
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)
    if how == "huge":
        return value * draw(st.integers(50, 2000))
    return draw(hostile_text)


@st.composite
def hostile_labels(draw, index: int) -> dict[str, str]:
    """A valid label set with some values mutated, unknown or hostile keys added, duplicates."""
    labels = draw(good_labels(index))
    labels.setdefault(f"{P}.health_check_interval", "1500")
    keys = sorted(k for k in labels if not k.startswith(f"{P}.alias_domain."))
    chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=4))
    if draw(st.booleans()):  # the host is where a slip costs most: mutate it often
        chosen.append(f"{P}.hostname")
    for key in chosen:
        labels[key] = draw(mutated(labels[key]))
    if draw(st.booleans()):  # a host someone else has, or anything at all
        labels[f"{P}.hostname"] = draw(
            st.one_of(hostile_text, st.sampled_from(["dup.example.com", "g0.example.com"]))
        )
    for key, value in draw(st.dictionaries(hostile_key, hostile_text, max_size=4)).items():
        labels[f"{P}.{key}"] = value
    if draw(st.booleans()):  # many aliases, some hostile, some duplicates
        for i in range(draw(st.integers(0, 100))):
            labels[f"{P}.alias_domain.{i}"] = f"x{i % 50}.dup.example.com"
        labels[f"{P}.alias_domain.7"] = draw(hostile_text)
    return labels


@st.composite
def swarms(draw) -> tuple[list[dict], list[dict], set[str]]:
    """(services, tasks, names of the good services) with both proxies."""
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}),
    ]
    tasks = []
    good_count = draw(st.integers(0, 5))
    sets = [draw(good_labels(i)) for i in range(good_count)]
    sets += [draw(hostile_labels(50 + i)) for i in range(draw(st.integers(0, 5)))]
    good = set()
    for i, labels in enumerate(sets):
        sid, name = f"s{i:03d}", f"good{i}" if i < good_count else f"bad{i}"
        created = f"2026-01-01T00:00:{i // 60:02d}.{i % 60:09d}Z"
        services.append(b.service(sid, name, labels, created=created))
        tasks.append(b.task(f"t{i:03d}", sid, f"10.0.{i // 200}.{i % 200 + 2}"))
        if i < good_count:
            good.add(name)
    return services, tasks, good


def many_tls_services() -> tuple[list[dict], list[dict], set[str]]:
    """40 good TLS services with their own certificate pairs: more than one bind line holds."""
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}),
    ]
    tasks, good = [], set()
    for i in range(40):
        cert, key = SECRETS[i], SECRETS[(i + 1) % 40]
        labels = {"hostname": f"g{i}.example.com", "port": "80"}
        labels |= {"ssl_cert": cert, "ssl_cert_key": key, "ssl_only": str(i % 2 == 0)}
        services.append(
            b.service(f"s{i:03d}", f"good{i}", {f"{P}.{k}": v for k, v in labels.items()})
        )
        tasks.append(b.task(f"t{i:03d}", f"s{i:03d}", f"10.0.0.{i + 2}"))
        good.add(f"good{i}")
    return services, tasks, good


def huge_and_long() -> tuple[list[dict], list[dict], set[str]]:
    """A 253-character host with 1,000 aliases beside a label holding a megabyte."""
    host = good_host(0, ["a" * 63, "b" * 63, "c" * 63, "d" * 63])
    labels = {f"{P}.hostname": host, f"{P}.port": "80"}
    labels |= {f"{P}.alias_domain.{i}": f"a{i}.g0.example.com" for i in range(1000)}
    bad = {f"{P}.hostname": "x.example.com", f"{P}.port": "8" * 1_000_000}
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}),
        b.service("s000", "good0", labels),
        b.service("s001", "bad1", bad),
    ]
    return services, [b.task("t0", "s000", "10.0.0.2")], {"good0"}


EXPLICIT = {"many_tls_services": many_tls_services, "huge_and_long": huge_and_long}


# ---- what every example must satisfy ---------------------------------------------------------

TOKEN = r"[A-Za-z0-9._:/~\[\]-]+"
# Template expressions whose output is more than one token.
EXPRESSIONS = {
    "route | upstream(b)": rf"(?:return 503;|proxy_pass https?://{TOKEN};)",
    "value | quoted": rf'"[{HEADER_VALUE_CHARS}]+"',
}
# Template expressions that print whole lines of their own, each of this shape.
LINES = {
    "backend | server_text": rf"    server t\d+ {TOKEN}(?: weight \d+)?(?: check)?(?: ssl)?"
    r"(?: verify (?:none|required ca-file @system-ca sni var\(txn\.host\)))?(?: check-ssl)?"
    r"(?: disabled)?",  # render.server_text
}
# A call renders the macro's own lines, each checked on its own (fragments: a macro's, per item).
MACROS = ("location_body(", "fragments(")
_TAG = re.compile(r"(\{\{.*?\}\}|\{%-?.*?-?%\})")


def _line_shape(line: str) -> str | None:
    """A template line as a regex of the lines it can render to (None: a control-only line)."""
    parts = [part for part in _TAG.split(line) if part]
    if all(part.startswith("{%") or not part.strip() for part in parts) and any(
        part.startswith("{%") for part in parts
    ):
        return None
    if len(parts) == 1 and parts[0].startswith("{{") and parts[0].strip("{}- ").startswith(MACROS):
        return None
    if len(parts) == 1 and parts[0].strip("{}- ") in LINES:
        return LINES[parts[0].strip("{}- ")]
    stack: list[list[str]] = [[]]
    for part in parts:
        if part.startswith("{{"):
            expression = part[2:-2].strip()
            stack[-1].append(EXPRESSIONS.get(expression, TOKEN))
        elif part.startswith("{%"):
            word = part.strip("{%-} ").split()[0]
            if word in ("if", "for"):
                stack.append([word])
            elif word in ("endif", "endfor"):
                opened, *inner = stack.pop()
                stack[-1].append(f"(?:{''.join(inner)}){'?' if opened == 'if' else '*'}")
            else:
                raise AssertionError(f"template tag the shape reader does not know: {part}")
        else:
            stack[-1].append(re.escape(part))
    (pattern,) = stack
    return "".join(pattern)


def template_shapes(kind: str) -> re.Pattern:
    source = (Path(_template_dir()) / KINDS[kind].template).read_text()
    shapes = {shape for line in source.splitlines() if (shape := _line_shape(line)) is not None}
    return re.compile("|".join(f"(?:{shape})" for shape in sorted(shapes | {""})))


SHAPES = {kind: template_shapes(kind) for kind in KINDS}
CRT_LIST_LINE = re.compile(
    rf"# Generated by interlock for proxy {TOKEN}\. Do not edit\.|{TOKEN}/tls-[0-9a-f]{{12}}\.pem"
)


def foreign_lines(kind: str, text: str) -> list[str]:
    return [line for line in text.splitlines() if not SHAPES[kind].fullmatch(line)]


def expected_counts(desired: DesiredProxy, options: RenderOptions) -> dict[str, int]:
    """How often structural lines appear, predicted from the desired routes alone."""
    hosts = {route.host for route in desired.routes}
    moved = {redirect.host for redirect in desired.redirects}
    only = sum(1 for tls in desired.tls if tls.only)
    with_targets = {b.name for b in desired.backends if b.targets}
    passthrough = any(route.passthrough for route in desired.routes)
    if desired.proxy.spec.kind == "nginx":
        only_kept = sum(1 for tls in desired.tls if tls.only and tls.host not in moved)
        return {
            "server_name ": 1 + len(hosts) + only_kept + (1 if desired.tls else 0),
            "proxy_pass http": sum(
                (2 if r.path else 1)
                for r in desired.routes
                if r.backend in with_targets and r.host not in moved
            )
            + (desired.default_backend in with_targets),
            "upstream ": len(with_targets),
            "return 30": len(moved) + only_kept,
        }
    return {
        "use_backend ": len(desired.routes),
        "backend ": len(desired.backends) + 1 + (passthrough and bool(desired.certificates)),
        "http-request redirect scheme https": only,
        "http-request redirect prefix ": len(moved),
        "bind :": 1
        + bool(desired.certificates and not passthrough)
        + passthrough
        + bool(options.status_port),
    }


def check_example(services, tasks, good, options: RenderOptions, seen: list) -> None:
    secrets = [{"ID": f"id-{name}", "Spec": {"Name": name}} for name in SECRETS]
    snapshot = snapshot_from_api(services, tasks, [b.network("net1")], [], [], secrets)
    desired = desired_state(snapshot, P)
    for problem in desired.problems:
        shown = str(problem)
        assert shown.isprintable() and len(shown) < 2000, shown[:300]
    mine = [p for p in desired.problems if p.service in good and p.rejected]
    assert not mine, [str(p)[:300] for p in mine]
    by_kind = {d.proxy.spec.kind: d for d in desired.proxies}
    assert set(by_kind) == {"nginx", "haproxy"}
    labels_of = {s["Spec"]["Name"]: s["Spec"]["Labels"] for s in services}
    for one in desired.proxies:
        rendered = render(one, options)
        kind = one.proxy.spec.kind
        assert not foreign_lines(kind, rendered.text), foreign_lines(kind, rendered.text)[:5]
        for line, count in expected_counts(one, options).items():
            found = sum(1 for x in rendered.text.splitlines() if x.lstrip().startswith(line))
            assert found == count, (line, found, count)
        for text in rendered.files.values():
            assert all(CRT_LIST_LINE.fullmatch(x) for x in text.splitlines()), text
        backends = {x.name: x.service for x in one.backends}
        routed = {(r.host, backends[r.backend]) for r in one.routes}
        for name in good:
            spec_hosts = _good_hosts(labels_of[name])
            assert {(h, name) for h in spec_hosts} <= routed, (name, spec_hosts)
        for cert in one.certificates:
            for file, body in ((cert.file, checkcert.CERT), (f"{cert.file}.key", checkcert.KEY)):
                path = Path(options.secrets_dir) / file
                if not path.exists():
                    path.write_text(body)
        seen.append((kind, rendered, repr(labels_of)[:3000]))


def _good_hosts(labels: dict[str, str]) -> set[str]:
    """The hosts a good service's labels name (its labels are valid by construction)."""
    get = labels.get
    main = ".".join(x.strip().lower() for x in (get(f"{P}.hostname"), get(f"{P}.domain")) if x)
    aliases = {v for k, v in labels.items() if k.startswith(f"{P}.alias_domain")}
    return {main, *aliases}


def _real_check(job) -> str:
    kind, rendered, labels = job
    with tempfile.TemporaryDirectory() as folder:
        result = real_check(kind, rendered.text, Path(folder), rendered.files)
    if result.returncode != 0 or "warn" in result.stderr:
        return f"{kind} on labels {labels}:\n{result.stderr[-1500:]}"
    return ""


def swarm_settings(examples: int) -> settings:
    """How the properties over whole fuzzed Swarms run: new examples each run (no database), a
    failure printed with how to replay it (``@reproduce_failure``), large examples allowed."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("secrets")


def test_hostile_labels_never_break_the_pass_or_anyone_elses_routes(secrets_dir):
    options = RenderOptions(http_port=8080, https_port=8443, secrets_dir=str(secrets_dir))
    seen: list = []
    started = time.monotonic()

    @swarm_settings(MAX_EXAMPLES)
    @example(swarm="many_tls_services")  # by name: a failure prints the name, not a megabyte
    @example(swarm="huge_and_long")
    @given(swarm=swarms())
    def one(swarm):
        check_example(*(EXPLICIT[swarm]() if isinstance(swarm, str) else swarm), options, seen)

    one()
    pure = time.monotonic() - started
    unique = list(
        {
            (kind, rendered.digest): (kind, rendered, labels) for kind, rendered, labels in seen
        }.values()
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [f for f in pool.map(_real_check, unique) if f]
    print(
        f"fuzz: {len(seen) // 2} examples, {len(unique)} distinct configs; "
        f"pure checks {pure:.1f}s, "
        f"real nginx -t / haproxy -c {time.monotonic() - started - pure:.1f}s"
    )
    assert not failures, "\n\n".join(failures[:3])


def test_the_shape_check_sees_an_injected_line():
    """Guards the check above: a line the template cannot produce is found."""
    services, tasks, _ = many_tls_services()
    snapshot = snapshot_from_api(services, tasks, [b.network("net1")], [], [], [])
    for one in desired_state(snapshot, P).proxies:
        text = render(one, RenderOptions()).text
        kind = one.proxy.spec.kind
        assert foreign_lines(kind, text) == []
        injected = text.replace("listen 80", "listen 80;\n    return 200 'pwned'", 1)
        injected = injected.replace("bind :80", "bind :80\n    http-request return status 200", 1)
        assert foreign_lines(kind, injected), kind


@settings(max_examples=300, deadline=None, database=None, print_blob=True)
@given(labels=hostile_labels(1))
def test_whatever_the_grammar_accepts_the_renderer_accepts(labels):
    """Cheap and many: one service's labels straight through the grammar. Nothing raises, the
    safety net (a grammar that raised) is never needed, and every accepted value is one that the
    renderer's second wall lets through: so a valid service never costs a proxy its config."""
    spec, problems = parse_app("web", labels, P)
    assert not [p for p in problems if "could not be read" in p.reason], problems
    assert all(str(p).isprintable() and len(str(p)) < 2000 for p in problems)
    if spec is None:
        return
    words = [*spec.hosts, spec.network or "x", spec.cluster or "x", spec.balance or "x"]
    words += [spec.context_root or "/", spec.health_check or "/"]
    if spec.tls:
        words += [spec.tls.cert_secret, spec.tls.key_secret]
    for word in words:
        assert safe_token(word) == word and word.isascii()
    assert all(len(host) <= 253 for host in spec.hosts)
    assert spec.port is None or 1 <= spec.port <= 65535
    assert 100 <= spec.health_interval_ms <= 3_600_000
