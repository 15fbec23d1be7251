"""TLS termination from Docker secrets, through real nginx and HAProxy, with real HTTPS (SNI)."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess

import pytest

from tests.bed.probes import LOOPBACK, http_get, wait_until
from tests.swarm.controlled import routed

HOST = "secure.example.com"


def self_signed(tmp_path) -> tuple[str, str, str]:
    """A certificate for HOST and its key (PEM texts), and the certificate's path (the CA)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=DNS:{HOST}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert.read_text(), key.read_text(), str(cert)


def https_get(port: int, host: str, cafile: str, path: str = "/") -> tuple[int, str]:
    """GET over TLS to 127.0.0.1:port with SNI and Host ``host``, verifying against ``cafile``."""
    context = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=5)
    conn._create_connection = lambda _address, *args, **kwargs: socket.create_connection(
        (LOOPBACK, port), *args, **kwargs
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def tls_app(lab, swarm, tmp_path):
    cert, key, cafile = self_signed(tmp_path)
    crt_secret, key_secret = swarm.secret("crt", cert), swarm.secret("key", key)
    lab.app(
        "secure",
        hostname=HOST,
        port="8080",
        ssl_cert=crt_secret.name,
        ssl_cert_key=key_secret.name,
        ssl_only="true",
    )
    lab.app("plain", hostname="plain.example.com", port="8080")
    return cafile


def assert_tls_served(lab, cafile):
    status, body = https_get(lab.tls_port, HOST, cafile, "/x")
    assert status == 200 and "-secure.1." in body and "path=/x " in body, body
    redirect = http.client.HTTPConnection(LOOPBACK, lab.port, timeout=5)
    redirect.request("GET", "/x?y=1", headers={"Host": HOST})
    response = redirect.getresponse()
    assert (response.status, response.getheader("Location")) == (301, f"https://{HOST}/x?y=1")
    redirect.close()
    assert http_get(lab.port, "plain.example.com")[0] == 200  # other hosts stay on plain HTTP


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_tls_from_docker_secrets_in_rolling_mode(kind, swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service(kind, tls=True)
    cafile = tls_app(lab, swarm, tmp_path)
    result = lab.converge()
    assert result.converged
    assert_tls_served(lab, cafile)
    proxy.reload()
    mounted = {
        s["SecretName"] for s in proxy.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    }
    assert mounted == {f"{swarm.prefix}crt", f"{swarm.prefix}key"}


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_tls_in_signal_mode_mounts_the_secrets_once_then_reloads_in_place(
    kind, swarm, bed, tmp_path
):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service(kind, mode="signal", tls=True)
    cafile = tls_app(lab, swarm, tmp_path)
    with lab.run(str(tmp_path / "controller.log")):
        wait_until(
            lambda: https_get(lab.tls_port, HOST, cafile)[0] == 200,
            60,
            message="HTTPS through the proxy",
        )
        assert_tls_served(lab, cafile)
        proxy.reload()
        version = proxy.version
        lab.app("more", hostname="more.example.com", port="8080")  # a route change: in place
        swarm.wait_http(lab.port, "more.example.com", contains="-more.1.", timeout=15)
        proxy.reload()
        assert proxy.version == version  # no service update (no restart) for a route change
        assert https_get(lab.tls_port, HOST, cafile)[0] == 200
