#!/usr/bin/env python3
"""A backend of the Lethe lab: an HTTP/1.1 server that names itself.

GET /           -> "<name>\n"
GET /healthz    -> "ok\n" (503 while the file <state>/<name>.sick exists)
GET /bytes/N    -> N bytes, then "<name>\n" is not sent: the body is N bytes
POST /          -> reads the body, answers "<name> <bytes read>\n"

Listens on [::] (IPv4 too) on every --port given.
"""
import argparse
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def handler(name, sick_file):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, code, body):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", name)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/healthz":
                if os.path.exists(sick_file):
                    self.reply(503, b"sick\n")
                else:
                    self.reply(200, b"ok\n")
            elif self.path.startswith("/bytes/"):
                n = int(self.path[len("/bytes/"):])
                self.send_response(200)
                self.send_header("Content-Length", str(n))
                self.send_header("X-Backend", name)
                self.end_headers()
                chunk = b"x" * 65536
                while n > 0:
                    self.wfile.write(chunk[: min(n, len(chunk))])
                    n -= min(n, len(chunk))
            else:
                self.reply(200, (name + "\n").encode())

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            read = 0
            while read < n:
                data = self.rfile.read(min(65536, n - read))
                if not data:
                    break
                read += len(data)
            self.reply(200, f"{name} {read}\n".encode())

        def log_message(self, *args):
            pass

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, action="append", required=True)
    ap.add_argument("--state", default="/tmp")
    args = ap.parse_args()
    sick = os.path.join(args.state, args.name + ".sick")
    servers = [Server(("::", p), handler(args.name, sick)) for p in args.port]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
