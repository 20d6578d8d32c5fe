"""Optional re-ranking of the kNN vote by a vision-language model (the paper's Gemini stage), and its backends.

Specs, as the CLI and the app take them:
    gemini:<model>                     e.g. gemini:gemini-2.5-flash (key in GEMINI_API_KEY or GOOGLE_API_KEY)
    openai:<base-url>:<model>          e.g. openai:http://localhost:8000/v1:Qwen2-VL-7B
                                       (key, if any, in VMEM_RERANK_API_KEY; OPENAI_API_KEY only over https)
"""

from __future__ import annotations

import re

from .answers import interpret, normalise
from .base import (
    STATUSES,
    ChatReranker,
    Reranker,
    RerankError,
    RerankRequest,
    RerankResult,
    ShownNeighbor,
)
from .cache import CachingReranker, RerankCache

SPEC_HELP = "gemini:<model> (e.g. gemini:gemini-2.5-flash) or openai:<base-url>:<model> (e.g. " \
            "openai:http://localhost:8000/v1:llava)"
# scheme://host[:port][/path]:model; the port is taken whole (possessive), so "http://h:8000/v1" alone has no model
_OPENAI_SPEC = re.compile(r"^(https?://(?:\[[^\]]+\]|[^/:\s]+)(?::\d+)?+(?:/[^:\s]*)?):(.+)$")


def parse_spec(spec: str) -> tuple[str, str, str]:
    """(api, base_url, model) from a spec; the model may itself hold colons (e.g. Ollama's llava:13b).

    >>> parse_spec("gemini:gemini-2.5-flash")
    ('gemini', '', 'gemini-2.5-flash')
    >>> parse_spec("openai:http://localhost:11434/v1:llava:13b")
    ('openai', 'http://localhost:11434/v1', 'llava:13b')
    """
    api, _, rest = str(spec).partition(":")
    if api == "gemini" and rest.strip():
        return "gemini", "", rest.strip()
    if api == "openai":
        match = _OPENAI_SPEC.match(rest.strip())
        if match and match.group(2).strip():
            return "openai", match.group(1), match.group(2).strip()
    raise RerankError(f"unknown re-ranker {spec!r}; accepted: {SPEC_HELP}")


def load_reranker(spec: str, **options) -> ChatReranker:
    """A re-ranker from a spec; options go to ChatReranker (timeout, attempts, backoff, synonyms, ...).

    Raises:
        RerankError: the spec is malformed, or the API key it needs is missing.
    """
    api, base_url, model = parse_spec(spec)
    if api == "gemini":
        from .gemini import GeminiReranker

        return GeminiReranker(model=model, **options)
    from .openai_compat import OpenAICompatibleReranker

    return OpenAICompatibleReranker(model=model, base_url=base_url, **options)


__all__ = [
    "STATUSES",
    "SPEC_HELP",
    "CachingReranker",
    "ChatReranker",
    "RerankCache",
    "RerankError",
    "RerankRequest",
    "RerankResult",
    "Reranker",
    "ShownNeighbor",
    "interpret",
    "load_reranker",
    "normalise",
    "parse_spec",
]
