"""A job-callback endpoint on 127.0.0.1, receiving callbacks as a user's endpoint would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() on arrival
    body: bytes
    signature: str  # X-Fiscalflow-Signature


@dataclass
class CallbackReceiver:
    url: str
    fail_first: int = 0  # the first N deliveries are answered 503 (the sender must retry)
    calls: list[Received] = field(default_factory=list)


@contextmanager
def callback_receiver(fail_first: int = 0) -> Iterator[CallbackReceiver]:
    """Serves ``http://127.0.0.1:<port>/done`` until the block ends; ``.calls`` in arrival order."""
    holder: list[CallbackReceiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = holder[0]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.calls.append(Received(time.monotonic(), body, self.headers.get("X-Fiscalflow-Signature", "")))
            self.send_response(503 if len(rec.calls) <= rec.fail_first else 200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(CallbackReceiver(f"http://127.0.0.1:{server.server_address[1]}/done", fail_first))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
