"""A scripted OpenAI-compatible chat server on loopback, for judge and oracle tests."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChatServer:
    """Replies to ``POST /v1/chat/completions`` with the scripted (status, text) pairs in order (the
    last one repeats) and records every request body, with ``prompt_tokens`` as its usage if given;
    ``GET`` of a path in ``routes`` answers its JSON, any other ``GET`` a 404 (as an engine without
    that route)."""

    def __init__(
        self, script: list[tuple[int, str]], routes: dict[str, object] | None = None, prompt_tokens: int | None = None
    ):
        self.script, self.requests, self.routes = list(script), [], routes or {}
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": (prompt_tokens or 0) + 1}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path in server.routes
                payload = json.dumps(server.routes[self.path] if found else {"error": "not found"}).encode()
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                status, text = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                reply = {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                    ],
                    **({"usage": usage} if prompt_tokens else {}),
                }
                payload = json.dumps(reply if status == 200 else {"error": {"message": text}}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
