"""vmem: a visual memory you can see into and edit (Geirhos et al., "Towards flexible perception with visual memory")."""

from typing import TYPE_CHECKING

from .backends.hnsw_index import IndexParams
from .classification import Classification, Neighbor
from .encoders import DEFAULT_ENCODER, Encoder, available_encoders, load_encoder, register_encoder
from .errors import (
    BadImageError,
    BadSettingError,
    BadVectorError,
    DatasetError,
    EncoderError,
    EncoderMismatchError,
    MemoryFormatError,
    MemoryLockedError,
    UnknownIdError,
    UnknownLabelError,
    VmemError,
)
from .memory import BuildReport, VisualMemory
from .rerank import cache as _rerank_cache  # noqa: F401  registers the re-rank cache to forget purged exemplars
from . import unlearn as _unlearn  # noqa: F401  registers what finishes an interrupted purge on open
from .voting import RULES, VoteSettings, class_scores, prepare_votes, rule_weights, vote_all_k

if TYPE_CHECKING:  # imported on first use (`__getattr__` below); here for type checkers and the API reference
    from .analysis.evaluate import EvalResult, evaluate_dataset, evaluate_embeddings

__version__ = "0.1.0"

# evaluation pulls in the dataset readers and the experiment curves (~0.14 s): a process that only opens a memory to
# classify, delete or purge one exemplar does not pay for them. They are imported on first use of these names
_LAZY = {"EvalResult": ".analysis.evaluate", "evaluate_dataset": ".analysis.evaluate",
         "evaluate_embeddings": ".analysis.evaluate"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "DEFAULT_ENCODER",
    "RULES",
    "BadImageError",
    "BadSettingError",
    "BadVectorError",
    "BuildReport",
    "Classification",
    "DatasetError",
    "Encoder",
    "EncoderError",
    "EncoderMismatchError",
    "EvalResult",
    "IndexParams",
    "MemoryFormatError",
    "MemoryLockedError",
    "Neighbor",
    "UnknownIdError",
    "UnknownLabelError",
    "VisualMemory",
    "VmemError",
    "VoteSettings",
    "available_encoders",
    "class_scores",
    "evaluate_dataset",
    "evaluate_embeddings",
    "load_encoder",
    "prepare_votes",
    "register_encoder",
    "rule_weights",
    "vote_all_k",
]
