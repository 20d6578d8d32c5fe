"""Local stand-ins for the Gemini and OpenAI chat-completions HTTP APIs, for the re-ranking tests.

Each server runs in a thread on 127.0.0.1, records every request (path, headers, JSON body), and answers from a
script of steps: an answer text, an HTTP error, a raw body, or a delay; when the script runs out it repeats `answer`.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional


@dataclass
class Step:
    answer: Optional[str] = None  # the model's text
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: Optional[str] = None  # a raw body instead of a well-formed one
    delay: float = 0.0


@dataclass
class Recorded:
    path: str
    headers: dict
    body: dict


class FakeVLM:
    """api = "gemini" (POST /v1*/models/<model>:generateContent) or "openai" (POST <root>/chat/completions)."""

    def __init__(self, api: str, answer: str = "sneaker", required_key: Optional[str] = None) -> None:
        self.api = api
        self.answer = answer
        self.required_key = required_key
        self.script: list[Step] = []
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"unparsed": raw.decode("latin-1")}
                with fake._lock:
                    fake.requests.append(Recorded(self.path, dict(self.headers), body))
                    step = fake.script.pop(0) if fake.script else Step(answer=fake.answer)
                if step.delay:
                    time.sleep(step.delay)
                if fake.required_key is not None and not fake._authorised(self.headers):
                    step = Step(status=401 if fake.api == "openai" else 400,
                                body=json.dumps(fake._error(401, "API key not valid. Please pass a valid API key.")))
                status, text = fake._reply(step, self.path)
                payload = text.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in step.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    # --- wire formats -----------------------------------------------------------------------------------------------
    def _authorised(self, headers) -> bool:
        if self.api == "openai":
            return headers.get("Authorization") == f"Bearer {self.required_key}"
        return headers.get("x-goog-api-key") == self.required_key

    def _error(self, status: int, message: str) -> dict:
        if self.api == "openai":
            return {"error": {"message": message, "type": "invalid_request_error", "code": status}}
        names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                 500: "INTERNAL", 503: "UNAVAILABLE"}
        return {"error": {"code": status, "message": message, "status": names.get(status, "UNKNOWN")}}

    def _reply(self, step: Step, path: str) -> tuple[int, str]:
        if step.body is not None:
            return step.status, step.body
        if step.status != 200:
            return step.status, json.dumps(self._error(step.status, f"fake error {step.status}"))
        if self.api == "gemini":
            if not re.search(r"/v1[a-z0-9]*/models/[^/]+:generateContent$", path):
                return 404, json.dumps(self._error(404, f"no route {path}"))
            return 200, json.dumps({
                "candidates": [{"content": {"role": "model", "parts": [{"text": step.answer}]},
                                "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 1000, "candidatesTokenCount": 3, "totalTokenCount": 1003},
            })
        if not path.endswith("/chat/completions"):
            return 404, json.dumps(self._error(404, f"no route {path}"))
        return 200, json.dumps({
            "id": "chatcmpl-fake", "object": "chat.completion", "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": step.answer},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 3, "total_tokens": 1003},
        })

    # --- what the client sent ---------------------------------------------------------------------------------------
    def parts(self, index: int = -1) -> list[tuple[str, object]]:
        """The prompt of a recorded request as ("text", str) / ("image", png bytes) pairs, in order."""
        body = self.requests[index].body
        out: list[tuple[str, object]] = []
        if self.api == "gemini":
            (content,) = body["contents"]
            for part in content["parts"]:
                if "text" in part:
                    out.append(("text", part["text"]))
                else:
                    inline = part.get("inlineData") or part["inline_data"]
                    assert (inline.get("mimeType") or inline.get("mime_type")) == "image/png"
                    data = inline["data"]  # the SDK sends URL-safe base64, sometimes unpadded
                    out.append(("image", base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))))
            return out
        (message,) = body["messages"]
        for part in message["content"]:
            if part["type"] == "text":
                out.append(("text", part["text"]))
            else:
                url = part["image_url"]["url"]
                assert url.startswith("data:image/png;base64,")
                out.append(("image", base64.b64decode(url.split(",", 1)[1])))
        return out

    # --- lifecycle --------------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}" + ("/v1" if self.api == "openai" else "")

    @property
    def spec(self) -> str:
        return f"openai:{self.url}:fake-vlm" if self.api == "openai" else "gemini:fake-gemini"

    def __enter__(self) -> "FakeVLM":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
