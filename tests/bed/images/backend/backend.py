"""Test backend: answers any method and path with 200 and one line naming the serving task.

Body: ``task=<TASK_NAME or hostname> version=<VERSION or 1> path=<path> host=<Host header>``.
Each ``X-Request-ID`` the request carried comes back as an ``X-Seen-Request-ID`` header, so a test
sees the id a proxy sent on (and that it sent exactly one).
HTTP/1.1 with keep-alive, one thread per connection. It runs as PID 1, which ignores SIGTERM
unless a handler is installed, so it installs one: the stop of a Swarm task must be prompt.
Set LOG_REQUESTS=1 for an access log on stderr.
"""

import http.server
import os
import signal
import socket
import sys

PORT = int(os.environ.get("PORT", "8080"))
TASK = os.environ.get("TASK_NAME") or socket.gethostname()
VERSION = os.environ.get("VERSION") or "1"
LOG_REQUESTS = os.environ.get("LOG_REQUESTS") == "1"


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
        host = self.headers.get("Host", "")
        body = f"task={TASK} version={VERSION} path={self.path} host={host}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for request_id in self.headers.get_all("X-Request-ID") or ():
            self.send_header("X-Seen-Request-ID", request_id)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        if LOG_REQUESTS:  # off by default: a log line per request costs CPU under load tests
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = http.server.ThreadingHTTPServer(("", PORT), Handler)
    server.daemon_threads = True
    print(f"backend {TASK} version {VERSION} listening on :{PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
