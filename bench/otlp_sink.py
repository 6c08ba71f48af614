#!/usr/bin/env python3
"""A loopback OTLP/HTTP sink for benchmarks: accepts every POST (an export), reads its
body and answers 200, counting bytes. Usage: otlp_sink.py PORT. Stop it by its PID."""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Sink(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self):  # noqa: N802 (the http.server naming)
        n = int(self.headers.get("content-length", "0"))
        Sink.received += len(self.rfile.read(n))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
