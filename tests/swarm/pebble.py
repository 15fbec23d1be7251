"""A real ACME CA for the tests: Debian's ``pebble``, resolving every name to 127.0.0.1.

One pebble per test session (``pebble`` fixture in conftest.py): its API, management and DNS
listen on 127.0.0.1 only; ``pebble-challtestsrv`` answers every A query with 127.0.0.1, so each
HTTP-01 validation goes to 127.0.0.1:``http_port``, where the test under way publishes its proxy.
Validation is real (``PEBBLE_VA_NOSLEEP`` only removes pebble's random pause; never
``PEBBLE_VA_ALWAYS_VALID``). Orders are counted from pebble's own log.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.bed.probes import LOOPBACK, free_port, wait_until

VALIDITY_SECONDS = 3600  # pebble's certificates live an hour: renewal windows stay short
_ORDER_LINE = re.compile(r"added order|Order \S+ (?:created|added)", re.IGNORECASE)


def _self_signed_tls(folder: Path) -> tuple[Path, Path]:
    """pebble's own HTTPS certificate for 127.0.0.1 (the package ships none)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test API")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "api-cert.pem", folder / "api-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Pebble:
    """A running pebble: ``directory`` URL, ``ca_bundle`` for its API, ``http_port`` it
    validates on, ``root()`` its issuing root (PEM), ``orders()`` how many it created."""

    folder: Path
    directory: str
    ca_bundle: str
    http_port: int
    management: str
    log_path: Path
    processes: tuple[subprocess.Popen, ...] = ()

    def _get(self, url: str) -> str:
        context = ssl.create_default_context(cafile=self.ca_bundle)
        with urllib.request.urlopen(url, timeout=5, context=context) as answer:
            return answer.read().decode()

    def root(self) -> str:
        return self._get(f"{self.management}/roots/0")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def orders(self) -> int:
        """Orders pebble created so far (its log has one line per order)."""
        return sum(1 for line in self.log().splitlines() if _ORDER_LINE.search(line))

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def start_pebble(folder: Path, validity: int = VALIDITY_SECONDS) -> Pebble:
    """pebble and its DNS server on free ports of 127.0.0.1, validating HTTP-01 on a port
    reserved for the tests' proxies; its certificates live ``validity`` seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = _self_signed_tls(folder)
    api, management, dns, http_port = free_port(), free_port(), free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"{LOOPBACK}:{api}",
            "managementListenAddress": f"{LOOPBACK}:{management}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": validity,
        }
    }
    (folder / "pebble.json").write_text(json.dumps(config))
    log_path = folder / "pebble.log"
    log = open(log_path, "w")  # noqa: SIM115 (the processes write to it until stop)
    dns_server = subprocess.Popen(
        ["pebble-challtestsrv", "-dns01", f"{LOOPBACK}:{dns}", "-http01", "", "-https01", "",
         "-tlsalpn01", "", "-management", f"{LOOPBACK}:{free_port()}",
         "-defaultIPv4", LOOPBACK, "-defaultIPv6", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    ca = subprocess.Popen(
        ["pebble", "-config", str(folder / "pebble.json"), "-dnsserver", f"{LOOPBACK}:{dns}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
    )  # fmt: skip
    pebble = Pebble(
        folder,
        f"https://{LOOPBACK}:{api}/dir",
        str(cert),
        http_port,
        f"https://{LOOPBACK}:{management}",
        log_path,
        (ca, dns_server),
    )

    def up() -> bool:
        try:
            return "newOrder" in pebble._get(pebble.directory)
        except OSError:
            return ca.poll() is None and dns_server.poll() is None and False

    started = time.monotonic()
    wait_until(up, 20, 0.1, f"pebble answering (log: {log_path})")
    print(f"pebble up in {time.monotonic() - started:.2f}s at {pebble.directory}")
    return pebble
