#!/usr/bin/env python3
"""hello: a tiny HTTP service for gantry's examples.

GET /         answers "hello from <version>"
GET /healthz  answers "ok"

The version is read from a VERSION file next to this script (written by the build), or
"dev" when there is none. Usage: hello [--port PORT] [--port-file FILE]
"""
import argparse
import http.server
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    try:
        with open(os.path.join(HERE, "VERSION"), encoding="utf-8") as f:
            return f.read().strip() or "dev"
    except OSError:
        return "dev"


class Handler(http.server.BaseHTTPRequestHandler):
    # Keep-alive: every answer has a Content-Length, so connections can be reused. Headers and
    # body are separate writes: without TCP_NODELAY, Nagle's algorithm holds the body back.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        try:
            self.route()
        except Exception:  # a bug answers 500, and its traceback goes to the release's log
            traceback.print_exc()
            self.answer(500, "internal error\n")

    def route(self):
        if self.path == "/healthz":
            self.answer(200, "ok\n")
        elif self.path == "/":
            self.answer(200, f"hello from {version()}\n")
        else:
            self.answer(404, "not found\n")

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))


class Server(http.server.ThreadingHTTPServer):
    # The default backlog of 5 drops connections under load (the client waits a second to retry).
    request_queue_size = 128
    daemon_threads = True


def main(argv=None):
    parser = argparse.ArgumentParser(description="hello service")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--port-file", help="write the bound port here (useful with --port 0)")
    args = parser.parse_args(argv)
    server = Server(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w", encoding="utf-8") as f:
            f.write(str(port))
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"hello {version()} listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
