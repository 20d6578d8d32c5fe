"""The re-ranking stage: what a re-ranker is given, what it returns, and the shared call-parse-retry loop.

A re-ranker sees the query image and its nearest exemplars (thumbnail, label, distance), and answers with one label.
`ChatReranker` holds what every chat-style API shares (prompt, retries with backoff, answer parsing); a subclass only
turns the prompt into its wire format and the response back into text (`gemini.py`, `openai_compat.py`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Optional, Protocol, Sequence, runtime_checkable

from ..errors import VmemError
from .answers import interpret
from .prompt import PromptPart, build_prompt

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_ATTEMPTS = 4
DEFAULT_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0

# Result statuses: the first two carry a label, the rest say why there is none.
STATUSES = ("candidate", "new", "not_a_candidate", "ambiguous", "malformed", "error")


class RerankError(VmemError):
    """A re-ranker cannot work at all (no API key, key refused, unknown model or URL): stops a batch at once."""


class RateLimited(Exception):
    """HTTP 429 (or 503): retried after `retry_after` seconds when the server says, else with backoff."""

    def __init__(self, message: str, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientFailure(Exception):
    """A failure worth retrying: a 5xx answer or a dropped connection."""


class CallFailed(Exception):
    """A call that gives no answer for this query, but says nothing about the next one (e.g. a timeout)."""


class MalformedResponse(Exception):
    """The server answered 200 with a body that holds no answer text."""

    def __init__(self, message: str, body: str) -> None:
        super().__init__(message)
        self.body = body


@dataclass(frozen=True)
class ShownNeighbor:
    id: int
    label: str
    distance: float
    thumbnail: Optional[bytes]  # PNG bytes; None where the memory stored none


@dataclass(frozen=True)
class RerankRequest:
    """One question to the model: the query image (PNG), its neighbours nearest first (none: the query-only
    ablation), and the labels its answer is read against (`candidates`), listed in the prompt or not (see
    `prompt.PromptSwitches`)."""

    query_png: bytes
    query_sha256: str  # identifies the query for the cache
    neighbors: tuple[ShownNeighbor, ...]
    candidates: tuple[str, ...]
    allow_new: bool = False
    show_distances: bool = True
    list_candidates: bool = True


@dataclass
class RerankResult:
    """The model's answer: `label` is a candidate (or a new label where allowed), else None and `status` says why."""

    label: Optional[str]
    status: str
    raw: str  # the model's text as received (or the start of a body that held none)
    model: str
    matched_by: Optional[str] = None  # exact | normalised | synonym | mentioned | new
    detail: str = ""
    cached: bool = False
    attempts: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class Reranker(Protocol):
    """What the re-ranking stage needs: a name that identifies the model (cache key), and one call per query."""

    name: str

    def rerank(self, request: RerankRequest) -> RerankResult: ...


@dataclass
class CostModel:
    """Rough input-token counts of one call, for the estimate shown before a batch."""

    tokens_per_image: int
    price_per_million_tokens: float  # US dollars per million input tokens
    price_source: str  # where the price came from, shown beside the estimate

    def tokens(self, request: RerankRequest) -> int:
        text = sum(len(part.text or "") for part in build_prompt(request))
        images = 1 + sum(1 for n in request.neighbors if n.thumbnail)
        return images * self.tokens_per_image + text // 4  # ~4 characters per text token


@dataclass
class ChatReranker:
    """The shared loop of a chat-style re-ranker: prompt -> `_send` (with retries) -> parsed answer.

    Args:
        model: the model name the API knows.
        timeout: seconds to wait for one answer; a timeout is reported for that query, not retried (a slow model
            would be slow again, and each try is paid for).
        attempts: tries per query for rate limits (429) and transient server errors (5xx, dropped connections).
        backoff: seconds before the first retry, doubled each time (capped at `max_backoff`); a server's
            Retry-After wins when it gives one.
        synonyms: label -> other words the model may use for it, e.g. {"t-shirt/top": ["t-shirt", "top"]}.
        sleep: how to wait (tests pass a recorder).
    """

    model: str
    timeout: float = DEFAULT_TIMEOUT_S
    attempts: int = DEFAULT_ATTEMPTS
    backoff: float = DEFAULT_BACKOFF_S
    max_backoff: float = MAX_BACKOFF_S
    synonyms: Mapping[str, Sequence[str]] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
    cost: CostModel = field(default_factory=lambda: CostModel(258, 0.0, "unknown"))

    def __post_init__(self) -> None:
        if not str(self.model).strip():
            raise RerankError("a re-ranker needs a model name, got an empty one")
        if self.attempts < 1:
            raise RerankError(f"attempts must be at least 1, got {self.attempts}")
        if not self.timeout > 0:
            raise RerankError(f"timeout must be a positive number of seconds, got {self.timeout}")

    name = "chat"  # overridden per API: the spec string, e.g. "gemini:gemini-2.5-flash"

    def _send(self, parts: Sequence[PromptPart]) -> str:
        """One call: the model's answer text. Raises RateLimited, TransientFailure, CallFailed, MalformedResponse
        or RerankError."""
        raise NotImplementedError

    def rerank(self, request: RerankRequest) -> RerankResult:
        parts = build_prompt(request)
        attempt = 0
        while True:
            attempt += 1
            try:
                text = self._send(parts)
                break
            except (RateLimited, TransientFailure) as exc:
                if attempt >= self.attempts:
                    return self._failed("error", f"gave up after {attempt} tries: {exc}", attempt)
                wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                if isinstance(exc, RateLimited) and exc.retry_after is not None:
                    wait = min(self.max_backoff, exc.retry_after)
                log.info("%s: %s; retrying in %.2f s (try %d of %d)", self.name, exc, wait, attempt + 1,
                         self.attempts)
                self.sleep(wait)
            except CallFailed as exc:
                return self._failed("error", str(exc), attempt)
            except MalformedResponse as exc:
                return self._failed("malformed", str(exc), attempt, raw=exc.body[:2000])
        return self.interpret(text, request, attempts=attempt)

    def interpret(self, text: str, request: RerankRequest, attempts: int = 0, cached: bool = False) -> RerankResult:
        """Map an answer text onto the candidates (see answers.interpret)."""
        answer = interpret(text, request.candidates, request.allow_new, self.synonyms)
        return RerankResult(answer.label, answer.status, text, self.name, answer.matched_by, answer.detail,
                            cached, attempts)

    def _failed(self, status: str, detail: str, attempts: int, raw: str = "") -> RerankResult:
        return RerankResult(None, status, raw, self.name, None, detail, False, attempts)

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}({self.name!r})"


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header (the delay-seconds form; a date form is ignored).

    >>> parse_retry_after("2"), parse_retry_after("0.5"), parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    (2.0, 0.5, None)
    """
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
