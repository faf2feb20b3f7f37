"""A proxy in front of the upstream registry that counts what the mirror asks and can
misbehave on demand: corrupt or truncate blobs, stall a blob after its first quarter MiB until
told to go on, answer 429 with Retry-After, or drop every connection as an unreachable
upstream would."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

CHUNK = 256 * 1024


class UpstreamProxy:
    def __init__(self, target_url: str):
        target = urlsplit(target_url)
        self.target = (target.hostname, target.port)
        self.mode = "pass"
        self.retry_after = 2
        # "stall": a blob's first CHUNK goes out in small writes, then the rest waits for this.
        self.resume = threading.Event()
        self.stall_timed_out = False
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def blob_gets(self, digest: str) -> int:
        with self.lock:
            return Counter(self.requests)[("GET", f"blobs/{digest}")]

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):
                self._forward(body=False)

            def do_GET(self):
                self._forward(body=True)

            def _forward(self, body: bool):
                path = urlsplit(self.path).path
                kind = "blobs/" + path.rsplit("/", 1)[-1] if "/blobs/" in path else path
                with proxy.lock:
                    proxy.requests.append((self.command, kind))
                mode = proxy.mode
                if mode == "down":
                    self.close_connection = True
                    self.connection.close()
                    return
                if mode == "429":
                    self.send_response(429)
                    self.send_header("Retry-After", str(proxy.retry_after))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                upstream = http.client.HTTPConnection(*proxy.target, timeout=30)
                upstream.putrequest(self.command, self.path, skip_accept_encoding=True)
                for key, value in self.headers.items():
                    if key.lower() != "host":
                        upstream.putheader(key, value)
                upstream.endheaders()
                response = upstream.getresponse()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding"):
                        self.send_header(key, value)
                if response.getheader("Content-Length") is None:
                    self.send_header("Content-Length", "0")
                self.end_headers()
                if not body:
                    upstream.close()
                    return
                blob = "/blobs/" in path and response.status == 200
                sent = 0
                while chunk := response.read(CHUNK):
                    if blob and mode == "corrupt" and sent == 0:
                        chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                    if blob and mode == "truncate" and sent > 0:
                        self.close_connection = True
                        break
                    if blob and mode == "stall" and sent == CHUNK:
                        proxy.stall_timed_out = not proxy.resume.wait(30)
                    if blob and mode == "stall" and sent == 0:
                        for piece in range(0, len(chunk), CHUNK // 4):
                            self.wfile.write(chunk[piece:piece + CHUNK // 4])
                            self.wfile.flush()
                            time.sleep(0.05)
                    else:
                        self.wfile.write(chunk)
                    sent += len(chunk)
                upstream.close()

            def log_message(self, *args):
                pass

        return Handler
