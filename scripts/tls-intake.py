#!/usr/bin/env python3
"""An HTTPS stand-in for the intake, for the test of TLS verification: answers every POST with 202 and
prints one line per request it read ("POST <path> <body length> <first body bytes in hex>").

    tls-intake.py CERT KEY     prints its port on the first line, then serves until killed
"""
import http.server
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        print(f"POST {self.path} {len(body)} {body[:3].hex()}", flush=True)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
