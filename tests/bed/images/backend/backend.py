"""Test backend: answers any method and path with 200 and one line naming the serving task.

Body: ``task=<TASK_NAME or hostname> version=<VERSION or 1> path=<path> host=<Host header>``.
Each ``X-Request-ID`` the request carried comes back as an ``X-Seen-Request-ID`` header, so a test
sees the id a proxy sent on (and that it sent exactly one).
HTTP/1.1 with keep-alive, one thread per connection. It runs as PID 1, which ignores SIGTERM
unless a handler is installed, so it installs one: the stop of a Swarm task must be prompt.
Set LOG_REQUESTS=1 for an access log on stderr. LISTEN_DELAY=<seconds> starts listening that
long after the process starts (a slow-starting app: Swarm reports the task running meanwhile).

For the routing-feature tests: ``GET /health`` answers 503 while the file /tmp/unhealthy exists
(a test creates it in one task to fail that task's health check); a WebSocket upgrade (any path)
is answered 101 and every text frame is echoed back as ``<task> <text>``; with TLS_CERT and
TLS_KEY (PEM files) it serves HTTPS instead of HTTP. Once /tmp/refuse exists it closes its
listening socket and stays up: connections to it are refused while its container still runs.
"""

import base64
import hashlib
import http.server
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time

PORT = int(os.environ.get("PORT", "8080"))
TASK = os.environ.get("TASK_NAME") or socket.gethostname()
VERSION = os.environ.get("VERSION") or "1"
LOG_REQUESTS = os.environ.get("LOG_REQUESTS") == "1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


class Handler(http.server.BaseHTTPRequestHandler):
    """Same answer for every method; the request body, if any, is read and dropped."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm the body then waits for
    # the peer's delayed ACK (~40 ms) on every keep-alive request (HAProxy keeps backend
    # connections alive, nginx here does not), which capped HAProxy's rate in the load tests.
    disable_nagle_algorithm = True
    server_version = "interlock-bed-backend/1"

    def __getattr__(self, name: str):
        if name.startswith("do_"):
            return self.answer
        raise AttributeError(name)

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if (self.headers.get("Upgrade") or "").lower() == "websocket":
            return self.websocket()
        host = self.headers.get("Host", "")
        body = f"task={TASK} version={VERSION} path={self.path} host={host}\n".encode()
        unhealthy = self.path == "/health" and os.path.exists("/tmp/unhealthy")
        self.send_response(503 if unhealthy else 200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for request_id in self.headers.get_all("X-Request-ID") or ():
            self.send_header("X-Seen-Request-ID", request_id)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def websocket(self) -> None:
        """RFC 6455 server side, text frames only: each one is echoed with the task's name."""
        key = (self.headers.get("Sec-WebSocket-Key") or "").encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                break
            opcode, size = head[0] & 0x0F, head[1] & 0x7F
            if size == 126:
                size = struct.unpack("!H", self.rfile.read(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
            if opcode == 8:  # close
                self.wfile.write(b"\x88\x00")
                break
            reply = f"{TASK} {data.decode(errors='replace')}".encode()
            self.wfile.write(
                bytes([0x81, len(reply)])
                if len(reply) < 126
                else b"\x81\x7e" + struct.pack("!H", len(reply))
            )
            self.wfile.write(reply)
            self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        if LOG_REQUESTS:  # off by default: a log line per request costs CPU under load tests
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    time.sleep(float(os.environ.get("LISTEN_DELAY") or 0))
    server = http.server.ThreadingHTTPServer(("", PORT), Handler)
    server.daemon_threads = True
    if os.environ.get("TLS_CERT"):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.environ["TLS_CERT"], os.environ.get("TLS_KEY"))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"backend {TASK} version {VERSION} listening on :{PORT}", flush=True)
    threading.Thread(target=refuse_when_asked, args=(server,), daemon=True).start()
    server.serve_forever()
    server.server_close()
    print(f"backend {TASK} refuses connections now", flush=True)
    while True:
        time.sleep(3600)


def refuse_when_asked(server: http.server.HTTPServer) -> None:
    while not os.path.exists("/tmp/refuse"):
        time.sleep(0.2)
    server.shutdown()


if __name__ == "__main__":
    main()
