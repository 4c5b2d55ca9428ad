"""Small real HTTP servers on 127.0.0.1 that play AI services in tests: an
OpenAI-compatible chat completions endpoint and a custom analysis endpoint."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VALID_RESULTS: dict[str, Any] = {
    "performance_score": 42,
    "bottleneck_analysis": [
        {"type": "computation", "severity": "high", "function": "crunch_numbers",
         "description": "CPU-bound loop", "impact": 0.9}
    ],
    "optimization_suggestions": [
        {"category": "algorithm", "priority": "high", "title": "Vectorise crunch_numbers",
         "description": "Use numpy", "code_example": "np.sum(x)",
         "expected_improvement": "10x"}
    ],
    "risk_assessment": {"current_risks": ["CPU"], "potential_issues": [],
                        "recommendations": ["profile more"]},
}  # fmt: skip

Reply = tuple[int, dict[str, Any] | str]


class FakeAIServer:
    """Answers POSTs with `respond(path, body) -> (status, json-or-text)`; records bodies."""

    def __init__(self, respond: Callable[[str, dict[str, Any]], Reply]):
        self.requests: list[dict[str, Any]] = []
        self.first_request = threading.Event()
        self.release = threading.Event()  # lets handlers that wait on it finish at stop()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append({"path": self.path, "headers": headers, "body": body})
                outer.first_request.set()
                status, payload = respond(self.path, body)
                data = payload if isinstance(payload, str) else json.dumps(payload)
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data.encode())))
                    self.end_headers()
                    self.wfile.write(data.encode())
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def hang(self, seconds: float) -> None:
        self.release.wait(seconds)


def chat_completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200},
    }  # fmt: skip
