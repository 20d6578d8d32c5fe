"""Any server that speaks OpenAI's chat-completions API with image inputs (vLLM, llama.cpp, Ollama, LM Studio, or
OpenAI itself) as a re-ranker.

Plain HTTP through the standard library rather than the openai SDK: the re-ranker needs one POST and one JSON shape;
local servers often need no key (the SDK insists on one); and the SDK's own retry loop would have to be switched off
to keep one retry policy for both APIs. VMEM_RERANK_API_KEY, or else OPENAI_API_KEY
(never sent in clear text to another machine), is sent as a Bearer token and never stored.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Optional, Sequence

from .base import (
    CallFailed,
    ChatReranker,
    CostModel,
    MalformedResponse,
    RateLimited,
    RerankError,
    TransientFailure,
    parse_retry_after,
)
from .prompt import PromptPart

KEY_VARIABLE = "OPENAI_API_KEY"
# Meant for this one server: sent wherever the base URL points. OPENAI_API_KEY is usually a key for OpenAI itself,
# so it is never sent in clear text to another machine (plain http to a host that is not this one).
SERVER_KEY_VARIABLE = "VMEM_RERANK_API_KEY"
# OpenAI bills a low-detail image as 85 tokens; local servers vary, and usually cost nothing.
LOW_DETAIL_IMAGE_TOKENS = 85


@dataclass(repr=False)
class OpenAICompatibleReranker(ChatReranker):
    """A vision-language model behind an OpenAI-compatible /chat/completions endpoint.

    Args:
        base_url: the API root, e.g. http://localhost:8000/v1 (requests go to base_url + "/chat/completions").
        price_per_million_tokens: for the cost estimate; unknown (0) unless given.
    """

    base_url: str = ""
    price_per_million_tokens: Optional[float] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.base_url.startswith(("http://", "https://")):
            raise RerankError(f"OpenAI-compatible base URL {self.base_url!r} must start with http:// or https://, "
                              "e.g. http://localhost:8000/v1")
        self.base_url = self.base_url.rstrip("/")
        self.name = f"openai:{self.base_url}:{self.model}"
        self._key = _key_for(self.base_url)
        price = self.price_per_million_tokens
        self.cost = CostModel(LOW_DETAIL_IMAGE_TOKENS, 0.0 if price is None else price,
                              "unknown: a local server costs nothing; pass a price for a paid API" if price is None
                              else "given")

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "<api key>") if self._key else text

    def _body(self, parts: Sequence[PromptPart]) -> bytes:
        content = []
        for part in parts:
            if part.is_image:
                url = "data:image/png;base64," + base64.b64encode(part.image).decode("ascii")
                content.append({"type": "image_url", "image_url": {"url": url, "detail": "low"}})
            else:
                content.append({"type": "text", "text": part.text})
        return json.dumps({"model": self.model, "temperature": 0,
                           "messages": [{"role": "user", "content": content}]}).encode()

    def _send(self, parts: Sequence[PromptPart]) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        url = f"{self.base_url}/chat/completions"
        request = urllib.request.Request(url, data=self._body(parts), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            raise self._classify_http_error(exc, url) from None
        except (TimeoutError, socket.timeout):
            raise CallFailed(f"no answer from {self.name} within {self.timeout:g} s (timeout)") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise CallFailed(f"no answer from {self.name} within {self.timeout:g} s (timeout)") from None
            # nothing listens there, or the name does not resolve: every other query would fail the same way
            raise RerankError(f"cannot reach {url} ({exc.reason}): is the server running, and is the base URL "
                              "right?") from None
        except (ConnectionError, OSError) as exc:
            raise TransientFailure(f"connection to {url} failed: {exc}") from None
        return _answer_text(self._redact(body), self.name)

    def _classify_http_error(self, exc: urllib.error.HTTPError, url: str) -> Exception:
        try:
            detail = self._redact(exc.read().decode("utf-8", "replace"))[:300]
        except Exception:
            detail = ""
        code = exc.code
        if code == 429:
            return RateLimited(f"{self.name} rate limit (429): {detail}", parse_retry_after(exc.headers.get("Retry-After")))
        if code == 408 or code >= 500:
            return TransientFailure(f"{self.name} server error ({code}): {detail}")
        if code in (401, 403):
            hint = ("the key sent was rejected" if self._key
                    else f"set {SERVER_KEY_VARIABLE} (or {KEY_VARIABLE}: sent only over https or to this machine) "
                         "to the key this server expects")
            return RerankError(f"{url} refused the request ({code}): {hint}. Server said: {detail}")
        if code == 404:
            return RerankError(f"{url} not found (404): check the base URL (usually ends in /v1) and the model "
                               f"{self.model!r}. Server said: {detail}")
        return RerankError(f"{url} rejected the request ({code}); does model {self.model!r} accept images? "
                           f"Server said: {detail}")


def _answer_text(body: str, name: str) -> str:
    """The assistant's text from a chat-completions response body (content as a string or as a list of parts)."""
    try:
        message = json.loads(body)["choices"][0]["message"]
        content = message["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise MalformedResponse(f"{name} answered without choices[0].message.content: {body[:200]!r}", body) from None
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str) or not content.strip():
        reason = message.get("refusal") if isinstance(message, dict) else None
        raise MalformedResponse(f"{name} returned no answer text" + (f" (refusal: {reason})" if reason else ""), body)
    return content


def _key_for(base_url: str) -> Optional[str]:
    explicit = os.environ.get(SERVER_KEY_VARIABLE, "").strip()
    if explicit:
        return explicit
    host = urllib.parse.urlsplit(base_url).hostname or ""
    if base_url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
        return None
    return os.environ.get(KEY_VARIABLE, "").strip() or None
