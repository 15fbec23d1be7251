"""Render a proxy's desired routes into its configuration text, and hash it (pure).

Templates live in ``templates/`` (packaged as ``controller.templates``). Every value a template
prints goes through a filter that refuses anything outside a small safe alphabet: label values are
validated in ``labels``, and this is the second wall, so that no label, however it got here, can
add a directive, a block or a line to a proxy's configuration.

Limits of the proxies that real configurations reach are designed away here, not left to the
proxy's check: nginx's server-name hash is sized from the host names (a valid 73-character name
overflows the default bucket), and HAProxy's certificates go into a ``crt-list`` file beside the
config (a ``bind`` line holds at most 64 words, about 30 certificates). That file is one of
``Rendered.files``: see ``Rendered`` for how it travels.

A pass after one task changed renders again only what changed: the templates write each
backend's (and nginx's host's) block as a macro and print them with ``fragments(macro, items)``,
which remembers each block's text by the template, the proxy kind and the macro's arguments
(``Fragments``). So a macro given to ``fragments`` reads nothing but its arguments, the kind's
constants and pure helpers: anything else it read could be served stale.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

import jinja2
from jinja2.runtime import Macro

from . import slots
from .desired import Backend, Certificate, Challenge, DesiredProxy, HostRedirect, HostTls, Route
from .grammar import HEADER_VALUE_CHARS
from .kinds import KINDS, ProxyKind

_SAFE_TOKEN = re.compile(r"[A-Za-z0-9._:/~-]+")  # fullmatch: "$" would let a final newline in
_SAFE_TEXT = re.compile(rf"[{HEADER_VALUE_CHARS}]+")  # a header value: blanks, no quotes
CRT_LIST_SUFFIX = ".crt-list"


class RenderError(ValueError):
    """A value that must never reach a configuration did; nothing is rendered."""


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """Settings that shape every rendered configuration (from ``Settings``)."""

    http_port: int = 80
    https_port: int = 443
    secrets_dir: str = "/run/secrets"  # where Docker mounts secrets (tests point it elsewhere)
    max_connections: int = 4096
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    client_keepalive: float = 0.0
    worker_shutdown_timeout: float = 60.0  # nginx: old workers exit after it; 0 = never forced
    template_dir: str = ""  # "" uses the built-in templates
    status_port: int = 8404  # the proxies' unpublished status listener; 0 renders none
    status_allow: tuple[str, ...] = ()  # sources besides 127.0.0.1 it answers (identity.py)
    access_log: str = "json"  # the proxies' access log: "json", "text" or "off"

    @property
    def connect_timeout_ms(self) -> int:
        return int(self.connect_timeout * 1000)

    @property
    def read_timeout_ms(self) -> int:
        return int(self.read_timeout * 1000)

    @property
    def worker_shutdown_timeout_ms(self) -> int:
        return int(self.worker_shutdown_timeout * 1000)

    @property
    def client_keepalive_ms(self) -> int:
        return int(self.client_keepalive * 1000)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A proxy's configuration, and the files it names that must sit beside it.

    ``files`` maps an absolute path in the proxy's container to that file's text: an HAProxy
    proxy serving TLS has its crt-list, at ``<config_path>.<12 hex>.crt-list``, and a signal-mode
    proxy serving ACME certificates has each chain and key at ``<config_path>.acme-<12 hex>.pem``
    and ``.pem.key`` (``Certificate.inline``: key material, never in a repr, a log or a digest
    output; only in-place pushes carry them, never a Docker config).
    The name holds the digest of the file's text and the config names the file, so ``digest``
    (of ``text`` alone) changes whenever any file changes, and a new list never overwrites the one
    a running proxy was started with. Deploy every file before (or with) the config: rolling mode
    mounts each as its own Docker config at its path; signal mode writes each into the container
    before the config is checked there; a check container gets them at the same paths.
    """

    text: str
    digest: str  # sha256 of text, hex; covers ``files`` through their names in the text
    files: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)  # keys too

    @property
    def short(self) -> str:
        return self.digest[:16]


def safe_token(value: object) -> str:
    text = str(value)
    if not _SAFE_TOKEN.fullmatch(text):
        raise RenderError(f"refusing to render unsafe value {text!r}")
    return text


def quoted(value: object) -> str:
    """A header value in double quotes: only characters that neither proxy reads as syntax
    inside quotes (no quote, backslash, '$', '%', '#', braces), else nothing is rendered."""
    text = str(value)
    if not _SAFE_TEXT.fullmatch(text):
        raise RenderError(f"refusing to render unsafe text {text!r}")
    return f'"{text}"'


def tag(name: object) -> str:
    """A short stable id of a backend for nginx variable names (a name of more than 46
    characters overflows nginx's variables hash bucket)."""
    return hashlib.sha256(safe_token(name).encode()).hexdigest()[:12]


def variables_hash_size(backends: Iterable[Backend]) -> int:
    """nginx's ``variables_hash_max_size``: room for two variables per sticky backend beside
    nginx's own (about 150), twice over so that nginx finds a table size quickly."""
    sticky = sum(1 for backend in backends if backend.sticky_cookie)
    return _power_of_two(max(1024, 2 * (2 * sticky + 256)))


def servers(backend: Backend) -> list[tuple[str, int | None]]:
    """(target, weight or None) of a backend's servers; weights only when one per target."""
    if len(backend.weights) != len(backend.targets):  # also a check's blanked shape
        return [(target, None) for target in backend.targets]
    return list(zip(backend.targets, backend.weights, strict=True))


def server_options(backend: Backend) -> str:
    """What every server (slot) of a backend says after its address and weight."""
    parts = ["check"] if backend.health_check else []
    if backend.ssl_backend:
        parts.append("ssl")
        verify = "verify required ca-file @system-ca sni var(txn.host)"
        parts.append(verify if backend.ssl_verify else "verify none")
        if backend.health_check:  # its HTTP check over TLS too (the defaults check plain TCP)
            parts.append("check-ssl")
    return "".join(f" {part}" for part in parts)


def server_lines(backend: Backend) -> list[str]:
    """HAProxy's servers of a backend: its tasks in numbered slots, then free slots (see
    ``slots``: address changes go through the runtime API into these slots)."""
    found = servers(backend)
    targets = [safe_token(target) for target, _ in found]
    weights = [w for _, w in found if w is not None]
    options = server_options(backend)
    return [slots.server_line(slot, options) for slot in slots.initial(targets, weights)]


def server_text(backend: Backend) -> str:
    """``server_lines`` as the template prints them, each after a newline and the backend
    section's indent, made by ``slots.initial_text`` (free slots' text made once, not per
    backend)."""
    found = servers(backend)
    targets = [safe_token(target) for target, _ in found]
    weights = [w for _, w in found if w is not None]
    return slots.initial_text(targets, weights, server_options(backend), "    ")


def runtime_socket(kind: ProxyKind) -> str:
    """The runtime socket's path in the proxy's container: HAProxy expands ``$HOSTNAME`` in a
    quoted string, so every container of a proxy, on one node too, has a socket of its own."""
    return f"{kind.runtime_dir}/{kind.runtime_socket('${HOSTNAME}')}"


def regex_literal(value: str) -> str:
    """A validated path as a regex that matches it literally, without backslashes.

    Backslashes have meanings of their own in HAProxy's config parser; a character class does not.
    """
    return safe_token(value).replace(".", "[.]")


def _template_dir() -> str:
    """The checkout's templates when run from one (an editable install maps the package to
    one checkout, but a second work tree must render its own), else the installed package's."""
    beside = Path(__file__).resolve().parent.parent / "templates"
    if (beside / "nginx.conf.j2").is_file():
        return str(beside)
    try:
        return str(resources.files("controller.templates"))
    except ModuleNotFoundError:
        return str(Path(__file__).resolve().parent.parent / "templates")


@functools.lru_cache(maxsize=8)
def _environment(folder: str) -> jinja2.Environment:
    """A template environment for a folder; a user's folder falls back to the built-in one."""
    loader = jinja2.FileSystemLoader([f for f in (folder, _template_dir()) if f])
    env = jinja2.Environment(
        loader=loader,
        autoescape=False,  # not HTML: safety comes from safe_token, which raises
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["safe_token"] = safe_token
    env.filters["regex_literal"] = regex_literal
    env.filters["quoted"] = quoted
    env.filters["tag"] = tag
    # The helpers a remembered block calls once per backend or route, as filters: a template's
    # filter is called directly, a function in its context through Jinja's Context.call, which
    # inspects the callable on every call (~20,000 calls in a first pass over 5,000 services).
    env.filters["servers"] = servers
    env.filters["server_text"] = server_text
    env.filters["upstream"] = upstream
    return env


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Blocks a generation holds (two are kept: at most twice this many). A pass over a 10,000-service
# Swarm served by an nginx and an HAProxy proxy reads ~30,000 (a backend section each, an
# upstream and a server block each), the check's blanked shape (``verify.shape``) as many again.
# ~770 bytes a block (its text, its key and what the key holds): ~23 MB at 5,000 services (30,000
# blocks), ~100 MB at the bound.
GENERATION = 65_536


class Fragments:
    """The text of template blocks by what they are made from, for the life of the process.

    After one task of one service changed, a pass renders that service's blocks again, not the
    whole file (5,000 backends: ~200 ms each time, and the check's blanked shape once more). A
    key holds the template object itself (a changed file, or another ``template_dir``, is
    another template: it never gets another's text), the proxy kind (the names and paths a
    block reads from ``kinds``), the macro's name and its arguments: frozen values (``Backend``,
    ``RenderOptions``, ``HostBlock``...) whose equality means the same text.

    Bounded by generations rather than a strict LRU (a hit costs one dict lookup, where moving
    an entry to the end costs a second hash of its key): blocks land in the current generation;
    when it is full it becomes the previous one, and the one before is dropped; a block found in
    the previous generation moves to the current one. So a block read in either of the last two
    generations is kept, and at most ``2 * generation`` are. A block that raises
    (``RenderError``) is not kept: it raises again next time. No lock: a key's text is always
    right, so a race between threads costs at most a block rendered again.
    """

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self._current: dict[Hashable, str] = {}
        self._previous: dict[Hashable, str] = {}

    def text(self, key: Hashable, make: Callable[..., str], *args: object) -> str:
        """The block's text: remembered, or ``make(*args)`` now."""
        found = self._current.get(key)
        if found is None:
            found = self._previous.pop(key, None) if self._previous else None
            if found is None:
                found = make(*args)
            if len(self._current) >= self.generation:
                self._previous, self._current = self._current, {}
            self._current[key] = found
        return found

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def clear(self) -> None:
        self._current, self._previous = {}, {}


FRAGMENTS = Fragments(GENERATION)


def forget_rendered() -> None:
    """Empty the memory of rendered blocks (benchmarks and tests of a first pass)."""
    FRAGMENTS.clear()


def fragments_function(template: jinja2.Template, kind: str) -> Callable[..., str]:
    """The templates' ``fragments(macro, items, *shared)``: ``macro(item, *shared)`` of each
    item, joined; each block is rendered only when ``FRAGMENTS`` does not have it yet."""

    def fragments(macro: Macro, items: Iterable[Hashable], *shared: Hashable) -> str:
        scope = (template, kind, macro.name)
        text = FRAGMENTS.text
        return "".join([text((scope, item, shared), macro, item, *shared) for item in items])

    return fragments


@dataclass(frozen=True, slots=True)
class NameHash:
    """nginx's ``server_names_hash_bucket_size`` and ``_max_size`` for a set of host names."""

    bucket_size: int
    max_size: int


_POINTER = 8  # nginx on 64-bit platforms: sizes below are upper bounds for 32-bit ones too
_BUCKET_LIMIT = 32768  # nginx refuses a bucket above 65536 minus a cache line
_SLACK = 3  # room in a bucket for this many of the longest names besides the fullest group


def _align(size: int, to: int) -> int:
    return (size + to - 1) // to * to


def _power_of_two(size: int) -> int:
    return 1 << max(size - 1, 0).bit_length()


def _nginx_key(name: str) -> int:
    """nginx's hash of a lower-case name (ngx_hash: key * 31 + byte, in a 64-bit word)."""
    key = 0
    for byte in name.encode():
        key = (key * 31 + byte) & 0xFFFF_FFFF_FFFF_FFFF
    return key


def _entry_size(name: str) -> int:
    """Bytes a name takes in a bucket (NGX_HASH_ELT_SIZE: value pointer, length, name)."""
    return _POINTER + _align(len(name) + 2, _POINTER)


def nginx_name_hash(hosts: Iterable[str]) -> NameHash:
    """Sizes with which nginx builds its server-name hash for these hosts, and without a warning.

    nginx refuses the whole config when one name does not fit in a bucket (the default bucket, a
    cache line of 64 bytes, holds names of at most 46 characters), and it warns when no table
    size up to ``max_size`` spreads the names so that every bucket fits. A bucket here holds the
    largest group of names with one and the same hash (they share a bucket at any table size;
    ``*31`` hashes collide on purpose easily, e.g. "an" and "c0") plus a few of the longest names,
    and the table may have twice as many slots as names: nginx then finds a size quickly.
    """
    names = {*hosts, "_"}  # "_": the default server's name is in the same table
    longest = max(_entry_size(name) for name in names)
    groups: dict[int, int] = {}
    for name in names:
        key = _nginx_key(name)
        groups[key] = groups.get(key, 0) + _entry_size(name)
    needed = _POINTER + max(groups.values()) + _SLACK * longest
    bucket = min(_power_of_two(max(64, needed)), _BUCKET_LIMIT)
    return NameHash(bucket, _power_of_two(max(512, 2 * len(names))))


def cert_path(file: str, options: RenderOptions) -> str:
    """Where the proxy reads a certificate (its key: the same path plus ".key"): an absolute
    ``file`` is written beside the config (``Certificate.inline``), else it is a secret mount."""
    return safe_token(file if file.startswith("/") else f"{options.secrets_dir}/{file}")


def crt_list(certificates: Iterable[Certificate], options: RenderOptions, proxy: str) -> str:
    """HAProxy's crt-list: a certificate file a line (its key is the same path plus ".key")."""
    lines = [f"# Generated by interlock for proxy {safe_token(proxy)}. Do not edit."]
    lines += [cert_path(c.file, options) for c in certificates]
    return "\n".join(lines) + "\n"


def crt_list_path(config_path: str, text: str) -> str:
    """Beside the config, named by its content: a new list never replaces a list in use."""
    return f"{config_path}.{digest(text)[:12]}{CRT_LIST_SUFFIX}"


def _extra_files(desired: DesiredProxy, options: RenderOptions) -> dict[str, str]:
    """The crt-list (HAProxy), and each in-place certificate and its key (named by the chain's
    digest, so the config's text, and with it the digest, changes when they do)."""
    files = {}
    for cert in (c for c in desired.certificates if c.inline):
        files[cert.file], files[f"{cert.file}.key"] = cert.chain, cert.key
    if not KINDS[desired.proxy.spec.kind].certificate_list or not desired.certificates:
        return files
    text = crt_list(desired.certificates, options, desired.proxy.name)
    return {**files, crt_list_path(desired.proxy.spec.config_path, text): text}


class HostBlock(NamedTuple):
    """What nginx's server block of one host is made from: the block's key (``Fragments``),
    so every value the block reads is here (or in the options and the kind)."""

    host: str
    routes: tuple[tuple[Route, Backend], ...]  # each route with its backend
    tls: HostTls | None
    redirect: HostRedirect | None
    challenges: tuple[Challenge, ...]  # pending ACME answers for this host
    rooted: bool  # a route serves all of the host's paths (else "/" answers 404)


def host_blocks(desired: DesiredProxy, routes: Sequence[Route]) -> Iterator[HostBlock]:
    """Each host's ``HostBlock``, of HTTP routes that come sorted by host, made as a template
    walks them: a list of every one would live through the whole render (objects that every
    full garbage collection walks)."""
    backends = {backend.name: backend for backend in desired.backends}
    tls = {one.host: one for one in desired.tls}
    redirects = {one.host: one for one in desired.redirects}
    challenges = _challenges_by_host(desired.challenges)
    rooted = {route.host for route in routes if not route.path}
    for host, group in groupby(routes, lambda route: route.host):
        served = tuple((route, backends[route.backend]) for route in group)
        yield HostBlock(
            host,
            served,
            tls.get(host),
            redirects.get(host),
            challenges.get(host, ()),
            host in rooted,
        )


def _haproxy_order(route: Route) -> tuple[str, int, str]:
    """HAProxy takes the first matching rule: longer path prefixes of a host must come first."""
    return route.host, -len(route.path), route.path


def _challenges_by_host(challenges: Iterable[Challenge]) -> dict[str, tuple[Challenge, ...]]:
    found: dict[str, tuple[Challenge, ...]] = {}
    for challenge in challenges:
        found[challenge.host] = (*found.get(challenge.host, ()), challenge)
    return found


def upstream(route: Route, backend: Backend) -> str:
    """nginx: where a route's location sends its requests (503 when no task serves)."""
    if not backend.targets:
        return "return 503;"
    uri = "/" if route.rewrite and route.path else ""
    scheme = "https" if backend.ssl_backend else "http"
    return f"proxy_pass {scheme}://{safe_token(backend.name)}{uri};"


@functools.lru_cache(maxsize=8)
def _name_hash(hosts: frozenset[str]) -> NameHash:
    """``nginx_name_hash`` of a set of hosts, remembered: a task change changes no host."""
    return nginx_name_hash(hosts)


def render(desired: DesiredProxy, options: RenderOptions) -> Rendered:
    """The whole configuration file of one proxy. Same input, same bytes, same digest."""
    backends = {backend.name: backend for backend in desired.backends}
    kind = KINDS[desired.proxy.spec.kind]
    template = _environment(options.template_dir).get_template(kind.template)
    files = _extra_files(desired, options)
    http_routes = [r for r in desired.routes if not r.passthrough]
    default = desired.default_backend
    text = template.render(
        proxy=desired.proxy.name,
        options=options,
        backends=desired.backends,
        routes=sorted(http_routes, key=_haproxy_order),
        passthrough=[r for r in desired.routes if r.passthrough],
        host_blocks=host_blocks(desired, http_routes),
        redirects={r.host: r for r in desired.redirects},
        default_backend=backends[default] if default else None,
        default_route=Route("", "", False, default) if default else None,
        servers=servers,
        server_lines=server_lines,
        server_text=server_text,
        runtime_socket=runtime_socket(kind) if desired.proxy.runtime and kind.runtime_dir else "",
        ca_bundle=kind.ca_bundle,
        upstream=upstream,
        host_tls={tls.host: tls for tls in desired.tls},
        certificates=desired.certificates,
        cert_path=functools.partial(cert_path, options=options),
        challenges=desired.challenges,
        crt_list=next((p for p in files if p.endswith(CRT_LIST_SUFFIX)), ""),
        server_names_hash=_name_hash(frozenset(route.host for route in desired.routes)),
        variables_hash_size=variables_hash_size(desired.backends),
        balance_names=kind.balance,
        fragments=fragments_function(template, kind.name),
    )
    return Rendered(text, digest(text), files)
