"""Automatic HTTPS, the shell: orders certificates from the ACME CA in a thread of its own.

The pass decides nothing here and waits for nothing: after each pass the loop hands its result
to ``AcmeWorker.offer``; the worker takes the newest result whose listing is younger than its
own last write to the Swarm (so it never acts twice on a state it already changed), asks
``acme.steps`` what to do and does it: each step a few requests to the CA with a timeout, and
writes (secrets, records) through the gateway. After a write it wakes the loop, whose next pass
serves the new certificate or challenge. A host's failure is recorded in the Swarm (its back-off
survives restarts) and touches no other host.

Order of writes, so that a controller killed at any point never orders twice and never loses a
key: the certificate's key secret, then the order at the CA, then the order record (its URL,
challenge and CSR); finalize needs only the CSR; the certificate secret, then the record's
removal. Only a kill between the CA's answer to the new order and the record's creation (one
round trip) leaves an order behind that a restart does not know: it expires at the CA unused.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker.errors

from . import acme, acmekeys
from .acmeclient import (
    AcmeClient,
    AcmeError,
    b64,
    csr_der,
    expiry,
    key_pem,
    load_account_key,
    new_key,
    thumbprint,
)
from .gateway import Gateway
from .logs import event
from .result import PassResult
from .settings import Settings

log = logging.getLogger(__name__)
SETTLE_SECONDS = 2.0  # a challenge served this long everywhere is validated


@dataclass
class AcmeWorker:
    api: Gateway
    settings: Settings
    wake: Callable[[], None] = lambda: None  # the loop's: a pass soon after each write
    clock: Callable[[], float] = time.time
    client: AcmeClient | None = None  # built on first use from the account key
    latest: tuple[float, PassResult] | None = field(default=None, init=False)
    written: float = field(default=0.0, init=False)  # monotonic time of the last write
    ready: threading.Event = field(default_factory=threading.Event, init=False)
    stop: threading.Event = field(default_factory=threading.Event, init=False)
    # Orders whose challenge the last pass found served everywhere (token -> that pass's id).
    quiet: dict[str, tuple[str, float]] = field(default_factory=dict, init=False)
    pass_id: str = field(default="", init=False)  # of the result the current round acts on

    @property
    def prefix(self) -> str:
        return self.settings.label_prefix

    # -- the thread ------------------------------------------------------------------------

    def offer(self, result: PassResult | None, _error: BaseException | None = None) -> None:
        """The loop's hook after every pass: remember the newest result (its listing's time)."""
        if result is not None:
            self.latest = (time.monotonic() - result.seconds, result)
            self.ready.set()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="acme", daemon=True)
        thread.start()
        return thread

    def run(self) -> None:
        while not self.stop.is_set():
            self.ready.wait(5.0)
            self.ready.clear()
            taken = self.latest
            if taken is None or taken[0] <= self.written:
                continue  # that listing predates our own last write: wait for a fresh one
            try:
                self.round(taken[1])
            except Exception as error:  # the worker outlives any round; the next one retries
                event(log, "acme_round_failed", logging.ERROR, error=str(error)[:300])

    def round(self, result: PassResult) -> int:
        """Every step the Swarm's state asks for now; returns how many were done."""
        settings = self.settings
        self.pass_id = result.pass_id
        todo = acme.steps(
            result.acme,
            result,
            self.clock(),
            settings.acme_renew_days,
            settings.acme_retry_seconds,
        )
        for step in todo:
            if isinstance(step, acme.Drop):
                self._drop(step)
            else:
                self._guarded(step)
        return len(todo)

    def _guarded(self, step: acme.Start | acme.Advance) -> None:
        """One host's step: whatever fails is that host's failure, recorded, never raised."""
        host = step.host if isinstance(step, acme.Start) else step.order.host
        try:
            if isinstance(step, acme.Start):
                self._start(step)
            else:
                self._advance(step)
        except AcmeError as error:
            if isinstance(step, acme.Advance) and (error.status == 0 or error.status >= 500):
                # The CA unreachable or failing: the order stands, the next round asks again.
                event(log, "acme_ca_unavailable", logging.WARNING, host=host, error=str(error))
                return
            self._failed(host, _attempt(step), str(error), _order_of(step))
        except (docker.errors.APIError, OSError, ValueError, KeyError) as error:
            self._failed(host, _attempt(step), str(error), _order_of(step))

    # -- the CA ----------------------------------------------------------------------------

    def _client(self) -> AcmeClient:
        if self.client is None:
            path = Path(self.settings.acme_account_key_file)
            try:
                key = load_account_key(path.read_bytes())
            except OSError as error:
                raise AcmeError(
                    f"no ACME account key at {path} (INTERLOCK_ACME_ACCOUNT_KEY_FILE): "
                    f"{error.strerror}"
                ) from None
            self.client = AcmeClient(
                self.settings.acme_directory,
                key,
                self.settings.acme_email,
                self.settings.acme_ca_bundle,
            )
        return self.client

    def _start(self, step: acme.Start) -> None:
        """Key secret first, then the order, then its record."""
        client, host = self._client(), step.host
        version = acme.version_of(self.clock())
        cert_name, key_name = acme.secret_names(self.prefix, host, version)
        key = new_key(self.settings.acme_key_type)
        csr = csr_der(key, host)
        pem = key_pem(key)
        self._write(
            lambda: self.api.create_secret(
                key_name, pem.encode(), labels=acme.labels_for(self.prefix, "key", host, version)
            )
        )
        sealing = acmekeys.read_sealing_key(self.settings.acme_account_key_file)
        url, order = client.new_order(host)
        challenge = client.http01(order["authorizations"][0])
        record = {
            "host": host,
            "version": version,
            "url": url,
            "challenge_url": challenge["url"],
            "token": challenge["token"],
            "keyauth": f"{challenge['token']}.{thumbprint(client.account_key)}",
            "csr": b64(csr),
            "key_secret": key_name,
            "cert_secret": cert_name,
            "attempt": step.attempt,
            # Sealed (acmekeys): what lets signal-mode proxies get the key in place, pass by pass.
            "key_box": acmekeys.seal(sealing, pem, key_name) if sealing else "",
        }
        self._record("order", host, version, record)
        event(log, "acme_order_started", host=host, order=url, attempt=step.attempt)

    def _advance(self, step: acme.Advance) -> None:
        """One step of an order, as the CA says where it stands."""
        client, order = self._client(), step.order
        found = client.get(order.url)
        status = found.get("status")
        if status == "pending" and self._settled(step):
            challenge = client.get(order.challenge_url)
            if challenge.get("status") == "pending":
                client.respond(order.challenge_url)
                event(log, "acme_challenge_answered", host=order.host, seen=self.pass_id)
        elif status == "ready":
            client.finalize(found["finalize"], _unb64(order.csr))
            event(log, "acme_order_finalized", host=order.host)
        elif status == "valid":
            self._issued(order, client.certificate(found["certificate"]))
        elif status == "invalid":
            raise AcmeError(f"the CA refused the order: {self._why(found)}", 400, "invalid")

    def _settled(self, step: acme.Advance) -> bool:
        """Served for ``SETTLE_SECONDS`` and in two passes in a row: a proxy signalled just
        before may still be starting its new worker (an HAProxy reload on a busy node takes a
        moment), and a failed validation costs the host a back-off and the CA's failure limit."""
        token, seen = step.order.token, self.quiet.get(step.order.token)
        if not step.served:
            self.quiet.pop(token, None)
            return False
        if seen is None:
            self.quiet[token] = (self.pass_id, time.monotonic())
            return False
        return seen[0] != self.pass_id and time.monotonic() - seen[1] >= SETTLE_SECONDS

    def _why(self, order: dict) -> str:
        """The CA's words on a failed authorization (its challenge's error)."""
        for url in order.get("authorizations", []):
            found = self._client().get(url)
            for challenge in found.get("challenges", []):
                error = challenge.get("error") or {}
                if error:
                    return f"{error.get('type', '')}: {error.get('detail', '')}"[:300]
        return "invalid"

    def _issued(self, order: acme.Order, chain: str) -> None:
        expires = expiry(chain)
        labels = acme.labels_for(
            self.prefix, "cert", order.host, order.version, expires=str(int(expires))
        )
        data = chain.encode()
        if order.key_box:  # before the certificate secret: a pass never sees one without it
            self._pair(order, chain)
        self._write(lambda: self.api.create_secret(order.cert_secret, data, labels=labels))
        self._write(lambda: self.api.remove_config(order.config_id))
        event(
            log,
            "acme_certificate_issued",
            host=order.host,
            certificate=order.cert_secret,
            expires=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
        )

    # -- the Swarm -------------------------------------------------------------------------

    def _failed(self, host: str, attempt: int, error: str, order: acme.Order | None) -> None:
        """Record the failure (the back-off is read from it by every later pass)."""
        now = self.clock()
        event(log, "acme_order_failed", logging.WARNING, host=host, attempt=attempt, error=error)
        record = {
            "host": host,
            "version": acme.version_of(now),
            "attempt": attempt,
            "failed_at": now,
            "error": error[:300],
        }
        try:
            self._record("failed", host, record["version"], record)
            if order is not None:
                self._write(lambda: self.api.remove_config(order.config_id))
        except docker.errors.APIError as failure:
            event(log, "acme_record_failed", logging.ERROR, host=host, error=str(failure)[:300])

    def _pair(self, order: acme.Order, chain: str) -> None:
        """The chain and the sealed key in one config, for in-place delivery (``acme.Pair``);
        already there (a round killed after writing it) is done."""
        pair = {
            "host": order.host,
            "version": order.version,
            "cert_secret": order.cert_secret,
            "key_secret": order.key_secret,
            "chain": chain,
            "key_box": order.key_box,
        }
        try:
            self._record("pair", order.host, order.version, pair)
        except docker.errors.APIError as error:
            if error.status_code != 409:
                raise

    def _record(self, kind: str, host: str, version: str, data: dict) -> None:
        name = acme.record_name(self.prefix, kind, host, version)
        labels = acme.labels_for(self.prefix, kind, host, version)
        self._write(lambda: self.api.create_config(name, json.dumps(data).encode(), labels=labels))

    def _drop(self, step: acme.Drop) -> None:
        remove = self.api.remove_secret if step.kind == "secret" else self.api.remove_config
        try:
            self._write(lambda: remove(step.id))
            event(log, "acme_removed", kind=step.kind, record=step.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:  # in use by a task still stopping: next round
            event(log, "acme_remove_failed", logging.DEBUG, record=step.name, error=str(error))

    def _write(self, call: Callable[[], object]) -> None:
        self.written = time.monotonic()
        try:
            call()
        finally:
            self.written = time.monotonic()
            self.wake()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _attempt(step: acme.Start | acme.Advance) -> int:
    return step.attempt if isinstance(step, acme.Start) else step.order.attempt


def _order_of(step: acme.Start | acme.Advance) -> acme.Order | None:
    return step.order if isinstance(step, acme.Advance) else None
