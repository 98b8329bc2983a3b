"""The app `deploy-app` runs in a subnet namespace: an HTTP server that names its VPC and
subnet. It binds first, then detaches (double fork) and reports `READY <pid>` on stdout, so
a port already in use is reported as a failure and the server outlives the worker."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def main() -> int:
    p = argparse.ArgumentParser(prog="vpcq-app")
    p.add_argument("--vpc", required=True)
    p.add_argument("--subnet", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    args = p.parse_args()
    body = (
        f"<html><body><h1>vpcq app</h1><p>VPC {args.vpc}, subnet {args.subnet}, "
        f"host {socket.gethostname()}</p></body></html>\n"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *a: object) -> None:
            sys.stderr.write(f"{self.address_string()} {format % a}\n")

    try:
        server = HTTPServer(("0.0.0.0", args.port), Handler)
    except OSError as e:
        print(f"port {args.port}: {e.strerror}", file=sys.stderr)
        return 1
    pid = os.fork()
    if pid:
        return 0  # the intermediate exits; the server is adopted by init
    os.setsid()
    print(f"READY {os.getpid()}", flush=True)
    fd = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
