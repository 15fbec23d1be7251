"""A small RFC 8555 (ACME) client: JWS-signed requests over the standard library's HTTP.

Only what HTTP-01 issuance needs: an account found or created for the account key, an order for
one host, its authorization's HTTP-01 challenge, finalize with a CSR, the certificate chain.
Every call is one request (plus a nonce when none is held), with a timeout, so the worker that
drives it stays bounded; the CA is the state machine, this client only walks it one step at a
time (the order's URL, kept in the Swarm, is enough to resume after a restart).

Keys: ECDSA P-256 (ES256) for the account; the certificates' keys are ``key_type``
(``ec256``, ``ec384`` or ``rsa2048``). Private keys are never logged and never leave this
process except the certificate's key, which the worker stores as a Docker secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

KEY_TYPES = ("ec256", "ec384", "rsa2048")
_JOSE = "application/jose+json"
_USER_AGENT = "interlock-swarm-acme/1"


class AcmeError(Exception):
    """The CA refused a request (its problem document's type and detail), or it could not be
    reached; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, kind: str = "") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


def b64(data: bytes) -> str:
    """base64url without padding, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key(key_type: str = "ec256") -> Any:
    """A fresh private key of one of ``KEY_TYPES``."""
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP384R1() if key_type == "ec384" else ec.SECP256R1())


def key_pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def load_account_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """The account key (PEM, EC P-256): the one curve ES256 signs with."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("the ACME account key must be an EC P-256 private key (PEM)")
    return key


def csr_der(key: Any, host: str) -> bytes:
    """A CSR for ``host`` (its only name, as the subject alternative name ACME reads)."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638: the account's public key digest that every key authorization ends with."""
    canonical = json.dumps(jwk(key), sort_keys=True, separators=(",", ":")).encode()
    return b64(hashlib.sha256(canonical).digest())


def sign(key: ec.EllipticCurvePrivateKey, protected: dict, payload: Any) -> bytes:
    """A flattened JWS (ES256); ``payload`` None is POST-as-GET (an empty payload)."""
    head = b64(json.dumps(protected).encode())
    body = "" if payload is None else b64(json.dumps(payload).encode())
    der = key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return json.dumps({"protected": head, "payload": body, "signature": signature}).encode()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body or b"{}")


@dataclass
class AcmeClient:
    """One account at one CA. ``ca_bundle`` ("" the system's) verifies the directory's TLS."""

    directory_url: str
    account_key: ec.EllipticCurvePrivateKey
    contact: str = ""
    ca_bundle: str = ""
    timeout: float = 10.0
    kid: str = ""  # the account's URL, once known
    _directory: dict = field(default_factory=dict, repr=False)
    _nonce: str = field(default="", repr=False)
    _context: ssl.SSLContext | None = field(default=None, repr=False)

    # -- transport ---------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = ssl.create_default_context(cafile=self.ca_bundle or None)
        return self._context

    def _http(self, method: str, url: str, data: bytes | None = None, accept: str = "") -> Answer:
        headers = {"User-Agent": _USER_AGENT}
        if data is not None:
            headers["Content-Type"] = _JOSE
        if accept:
            headers["Accept"] = accept
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl()) as r:
                answer = Answer(r.status, dict(r.headers.items()), r.read())
        except urllib.error.HTTPError as error:
            answer = Answer(error.code, dict(error.headers.items()), error.read())
        except (OSError, ValueError) as error:
            raise AcmeError(f"cannot reach the ACME CA at {url}: {error}") from None
        if "Replay-Nonce" in answer.headers:
            self._nonce = answer.headers["Replay-Nonce"]
        return answer

    def directory(self) -> dict:
        if not self._directory:
            answer = self._http("GET", self.directory_url)
            if answer.status != 200:
                raise AcmeError(f"ACME directory answered {answer.status}", answer.status)
            self._directory = answer.json()
        return self._directory

    def _fresh_nonce(self) -> str:
        if not self._nonce:
            self._http("HEAD", self.directory()["newNonce"])
        nonce, self._nonce = self._nonce, ""
        if not nonce:
            raise AcmeError("the ACME CA gave no nonce")
        return nonce

    def post(self, url: str, payload: Any, accept: str = "", use_jwk: bool = False) -> Answer:
        """A signed POST (``payload`` None: POST-as-GET); a rejected nonce is retried once,
        as RFC 8555 6.5 asks."""
        for attempt in (1, 2):
            protected: dict[str, Any] = {"alg": "ES256", "nonce": self._fresh_nonce(), "url": url}
            if use_jwk:
                protected["jwk"] = jwk(self.account_key)
            else:
                protected["kid"] = self.account()
            answer = self._http("POST", url, sign(self.account_key, protected, payload), accept)
            if answer.status < 400:
                return answer
            problem = _problem(answer)
            if problem[0].endswith(":badNonce") and attempt == 1:
                continue
            raise AcmeError(f"{problem[0]}: {problem[1]}", answer.status, problem[0])
        raise AcmeError("unreachable")  # pragma: no cover

    # -- the protocol ------------------------------------------------------------------------

    def account(self) -> str:
        """The account's URL: found for the key, or created (terms agreed, contact given)."""
        if not self.kid:
            payload: dict[str, Any] = {"termsOfServiceAgreed": True}
            if self.contact:
                payload["contact"] = [f"mailto:{self.contact}"]
            answer = self.post(self.directory()["newAccount"], payload, use_jwk=True)
            self.kid = answer.headers.get("Location", "")
            if not self.kid:
                raise AcmeError("the ACME CA gave the account no URL")
        return self.kid

    def new_order(self, host: str) -> tuple[str, dict]:
        """(order URL, order) for one DNS name."""
        payload = {"identifiers": [{"type": "dns", "value": host}]}
        answer = self.post(self.directory()["newOrder"], payload)
        url = answer.headers.get("Location", "")
        if not url:
            raise AcmeError("the ACME CA gave the order no URL")
        return url, answer.json()

    def get(self, url: str) -> dict:
        """POST-as-GET of an order, authorization or challenge."""
        return self.post(url, None).json()

    def http01(self, authorization_url: str) -> dict:
        """The HTTP-01 challenge of an authorization (url, token, status)."""
        found = self.get(authorization_url)
        for challenge in found.get("challenges", []):
            if challenge.get("type") == "http-01":
                return {**challenge, "authorization_status": found.get("status", "")}
        raise AcmeError(f"no http-01 challenge offered for {authorization_url}")

    def respond(self, challenge_url: str) -> dict:
        """Tell the CA that the challenge is served: it validates now."""
        return self.post(challenge_url, {}).json()

    def finalize(self, finalize_url: str, csr: bytes) -> dict:
        return self.post(finalize_url, {"csr": b64(csr)}).json()

    def certificate(self, url: str) -> str:
        """The issued chain (PEM: the certificate first, then the intermediates)."""
        return self.post(url, None, accept="application/pem-certificate-chain").body.decode()

    def revoke(self, cert_pem: str, reason: int = 0) -> None:
        der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(
            serialization.Encoding.DER
        )
        self.post(self.directory()["revokeCert"], {"certificate": b64(der), "reason": reason})


def _problem(answer: Answer) -> tuple[str, str]:
    """(type, detail) of an RFC 7807 problem document, however malformed the answer."""
    try:
        found = json.loads(answer.body)
        return str(found.get("type", f"http {answer.status}")), str(found.get("detail", ""))[:300]
    except (ValueError, AttributeError):
        return f"http {answer.status}", answer.body[:200].decode(errors="replace")


def expiry(cert_pem: str) -> float:
    """The first certificate's notAfter, as a Unix time."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return cert.not_valid_after_utc.timestamp()
