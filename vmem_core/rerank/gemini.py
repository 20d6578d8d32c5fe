"""Gemini as a re-ranker, through Google's official google-genai SDK.

The API key comes from the environment (GEMINI_API_KEY, or GOOGLE_API_KEY as the SDK reads it) and lives only in the
SDK client: it is never written to the memory, the cache or a log line. GOOGLE_GEMINI_BASE_URL (read by the SDK too)
or `base_url` points the client at another endpoint, e.g. a local fake server in tests.
"""

from __future__ import annotations

import os
import re
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
)
from .prompt import PromptPart

KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
BASE_URL_VARIABLE = "GOOGLE_GEMINI_BASE_URL"
# Gemini counts an image of at most 384 x 384 pixels as 258 tokens; thumbnails and the shrunk query stay below that.
GEMINI_IMAGE_TOKENS = 258
# US dollars per million input tokens of gemini-2.5-flash on Google's price list in 2025: an assumption to check
# against the current list (override with price_per_million_tokens / --price-per-mtok).
ASSUMED_PRICE_PER_MTOK = 0.30


def _import_genai():
    try:
        from google import genai
        from google.genai import errors, types
    except ImportError as exc:
        raise RerankError(f"gemini re-ranking needs the google-genai package ({exc}): pip install -r requirements.txt"
                          ) from None
    return genai, types, errors


def _class_named(exc: BaseException, *names: str) -> bool:
    return any(cls.__name__ in names for cls in type(exc).__mro__)


@dataclass(repr=False)
class GeminiReranker(ChatReranker):
    """A Gemini model (e.g. gemini-2.5-flash) as the re-ranking stage. See ChatReranker for the retry options.

    Raises:
        RerankError: no API key in the environment, or google-genai is not installed.
    """

    base_url: Optional[str] = None
    price_per_million_tokens: Optional[float] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name = f"gemini:{self.model}"
        key = next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v, "").strip()), None)
        if key is None:
            raise RerankError(
                f"gemini re-ranking needs an API key in {KEY_VARIABLES[0]} (or {KEY_VARIABLES[1]}); neither is set. "
                "Create one at https://aistudio.google.com/apikey and export it, e.g. "
                f"export {KEY_VARIABLES[0]}=...")
        genai, types, self._errors = _import_genai()
        self._types = types
        base_url = self.base_url or os.environ.get(BASE_URL_VARIABLE) or None
        # The SDK's own retries are off (retry_options unset): ChatReranker retries, the same way for every API.
        options = types.HttpOptions(base_url=base_url, timeout=int(self.timeout * 1000))
        self._client = genai.Client(api_key=key.strip(), vertexai=False, http_options=options)
        self._key_hint = key.strip()
        price = self.price_per_million_tokens
        self.cost = CostModel(GEMINI_IMAGE_TOKENS, ASSUMED_PRICE_PER_MTOK if price is None else price,
                              "assumed gemini-2.5-flash list price (2025)" if price is None else "given")

    def _redact(self, text: str) -> str:
        return text.replace(self._key_hint, "<api key>") if self._key_hint else text

    def _send(self, parts: Sequence[PromptPart]) -> str:
        types = self._types
        content = types.Content(role="user", parts=[
            types.Part.from_bytes(data=p.image, mime_type="image/png") if p.is_image else types.Part.from_text(text=p.text)
            for p in parts
        ])
        try:
            response = self._client.models.generate_content(
                model=self.model, contents=[content], config=types.GenerateContentConfig(temperature=0.0))
        except self._errors.APIError as exc:
            raise self._classify_api_error(exc) from None
        except Exception as exc:
            # The SDK sends through httpx (or its fork httpx2): match class names rather than import either.
            if _class_named(exc, "TimeoutException"):
                raise CallFailed(f"no answer from {self.name} within {self.timeout:g} s (timeout)") from None
            if _class_named(exc, "ConnectError"):  # every other query would fail the same way
                raise RerankError(f"cannot reach {self.name} ({self._redact(str(exc))}): check the network, or "
                                  f"{BASE_URL_VARIABLE} if set") from None
            if _class_named(exc, "RemoteProtocolError", "ReadError", "WriteError"):
                raise TransientFailure(f"connection to {self.name} dropped: {self._redact(str(exc))}") from None
            # the SDK validates the 200 body into its response model; a body it cannot read is malformed
            raise MalformedResponse(f"unreadable response from {self.name}: {type(exc).__name__}: "
                                    f"{self._redact(str(exc))[:300]}", self._redact(str(exc))) from None
        return self._answer_text(response)

    def _answer_text(self, response) -> str:
        candidates = getattr(response, "candidates", None) or []
        texts = []
        for candidate in candidates[:1]:
            for part in getattr(getattr(candidate, "content", None), "parts", None) or []:
                if getattr(part, "text", None) and not getattr(part, "thought", False):
                    texts.append(part.text)
        if texts:
            return "".join(texts)
        feedback = getattr(response, "prompt_feedback", None)
        reason = getattr(candidates[0], "finish_reason", None) if candidates else None
        why = (f"blocked: {feedback.block_reason}" if feedback is not None and getattr(feedback, "block_reason", None)
               else f"finish reason {reason}" if reason else "no candidates")
        body = response.model_dump_json(exclude_none=True) if hasattr(response, "model_dump_json") else str(response)
        raise MalformedResponse(f"{self.name} returned no answer text ({why})", self._redact(body))

    def _classify_api_error(self, exc) -> Exception:
        code = getattr(exc, "code", None)
        message = self._redact(str(exc))[:300]
        if code == 429 or code == 503:
            return RateLimited(f"{self.name} rate limit ({code}): {message}", _retry_delay(exc))
        if code in (408,) or (isinstance(code, int) and code >= 500):
            return TransientFailure(f"{self.name} server error ({code}): {message}")
        if code in (400, 401, 403) and re.search(r"api[ _]?key|permission|unauthenti", message, re.I):
            return RerankError(f"{self.name}: the API key was refused ({code}): {message}. Check "
                               f"{KEY_VARIABLES[0]} / {KEY_VARIABLES[1]}")
        if code == 404:
            return RerankError(f"{self.name}: model {self.model!r} not found ({message}); list the models your key "
                               "can use at https://ai.google.dev/gemini-api/docs/models")
        return RerankError(f"{self.name} refused the request ({code}): {message}")


def _retry_delay(exc) -> Optional[float]:
    """Gemini says how long to wait in the error's RetryInfo ("retryDelay": "13s"); headers may carry Retry-After."""
    from .base import parse_retry_after

    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is not None and headers.get("retry-after") is not None:
        return parse_retry_after(headers.get("retry-after"))
    match = re.search(r"retryDelay'?\"?\s*:\s*'?\"?(\d+(?:\.\d+)?)s", str(getattr(exc, "details", "")))
    return float(match.group(1)) if match else None
