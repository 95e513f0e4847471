"""A real HTTP proxy that misbehaves on cue, in front of the API or of the Stripe emulator:
answer 503 or 500 itself, hang up, or forward a request and then hang up without answering (the
answer is lost after the work was done)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import httpx

# pass: forward; 503 / 500: answer that status without forwarding; drop: forward, then hang up
# without answering; hangup: hang up without forwarding.
Fault = Literal["pass", "503", "500", "drop", "hangup"]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Script:
    """Faults for the coming requests in order; after them, everything passes."""

    faults: list[Fault] = field(default_factory=list)
    always: Fault | None = None
    unavailable_code: str = "database_unavailable"  # the code a 503 carries
    retry_after: str = "0"
    seen: list[tuple[str, str, Fault]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, method: str, path: str) -> Fault:
        with self.lock:
            fault: Fault = self.always or (self.faults.pop(0) if self.faults else "pass")
            self.seen.append((method, path, fault))
            return fault


@contextmanager
def faulty_proxy(upstream: str, script: Script) -> Iterator[str]:
    forward = httpx.Client(base_url=upstream, timeout=30)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = script.next(self.command, self.path)
            if fault == "hangup":
                self.close_connection = True
                return
            if fault in ("503", "500"):
                error = (
                    {"code": script.unavailable_code, "message": "try again"}
                    if fault == "503"
                    else {"type": "api_error", "message": "internal error"}
                )
                payload = json.dumps({"error": error}).encode()
                self.send_response(int(fault))
                self.send_header("Content-Type", "application/json")
                self.send_header("Retry-After", script.retry_after)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            answer = forward.request(self.command, self.path, content=body, headers=headers)
            if fault == "drop":
                self.close_connection = True
                return
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in HOP_BY_HOP | {"content-encoding"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_DELETE = relay

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        forward.close()
