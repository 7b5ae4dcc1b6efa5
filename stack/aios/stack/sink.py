"""``python -m aios.stack.sink``: the local site's stand-in for a city service that
receives aios's webhooks and alerts — it answers 200 and logs each request as one JSON
line, and ``GET /`` lists the latest ones. Production points actions at the real service.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RECENT: deque[dict[str, Any]] = deque(maxlen=200)


class Handler(BaseHTTPRequestHandler):
    echo = True
    """Print each request as a JSON line (the sink's log)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            payload: Any = json.loads(body)
        except ValueError:
            payload = body.decode(errors="replace")
        entry = {
            "time": datetime.now(UTC).isoformat(),
            "path": self.path,
            "idempotencyKey": self.headers.get("Idempotency-Key"),
            "payload": payload,
        }
        RECENT.append(entry)
        if self.echo:
            print(json.dumps(entry), flush=True)
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:
        body = json.dumps(list(RECENT), indent=2).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aios-sink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
