"""The one registry of index backends: each kind's name, the URI schemes it serves, the module that implements it,
and the entries it keeps in a memory folder. Adding a backend touches its own module (a class implementing
`IndexBackend`, and the module functions `open_index` and `build_index`) and one row here; nothing else names it.

A backend's module is imported only when a memory uses it: some import heavy or optional packages (torch, pymilvus).
"""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Optional

from ..errors import VmemError
from ..storage.layout import HNSW_DIR, MILVUS_LITE_DIR, MILVUS_STATE
from .base import SERVER_SCHEMES, MilvusIndexError, check_uri


@dataclass(frozen=True)
class BackendKind:
    name: str
    module: str  # vmem_core.backends.<module>: open_index(...), build_index(...), and optionally leave(...)
    entries: Callable[[dict], tuple[str, ...]]  # the memory-folder entries it keeps, under its vmem.json record
    schemes: tuple[str, ...] = ()  # server addresses it can use; none: it takes no URI
    without_uri: str = "lives in the memory folder"  # where its index is when it takes no URI (for the refusal)
    install: Optional[str] = None  # how to install its optional packages, when its module cannot be imported
    record: Callable[[Optional[str]], dict] = field(default=None)  # vmem.json record of a new index (None: name only)


def _milvus_record(uri: Optional[str]) -> dict:
    return {"name": "milvus", "uri": check_uri(uri), "collection": f"vmem_{uuid.uuid4().hex[:16]}"}


KINDS = (
    BackendKind("hnswlib", "hnsw", entries=lambda record: (HNSW_DIR,)),
    BackendKind("milvus", "milvus", schemes=SERVER_SCHEMES, record=_milvus_record,
                entries=lambda record: (MILVUS_STATE,) if record.get("uri") else (MILVUS_STATE, MILVUS_LITE_DIR),
                install="pip install -r requirements-scale.txt"),
    BackendKind("exact", "exact", entries=lambda record: (), without_uri="is loaded from the memory's database"),
)
REGISTRY = {kind.name: kind for kind in KINDS}
BACKENDS = tuple(REGISTRY)
DEFAULT_BACKEND = KINDS[0].name  # hnswlib
# every entry any backend may keep in a memory folder, in the registry's order
ALL_ENTRIES = (HNSW_DIR, MILVUS_STATE, MILVUS_LITE_DIR)


def load(kind: BackendKind) -> ModuleType:
    """The backend's module, or a clear error when its optional packages are not installed."""
    try:
        return importlib.import_module(f"{__package__}.{kind.module}")
    except ImportError as exc:
        if kind.install is None:
            raise
        raise MilvusIndexError(f"the Milvus index needs pymilvus and milvus-lite: {kind.install} ({exc})") from None


def backend_config(config: dict) -> dict:
    """The memory config's backend record, defaulting to hnswlib; a clear error for an unknown name."""
    record = dict(config.get("backend") or {"name": DEFAULT_BACKEND})
    if record.get("name") not in BACKENDS:
        raise VmemError(f"index backend {record.get('name')!r} in vmem.json is unknown; accepted: "
                        f"{', '.join(BACKENDS)}")
    return record


def new_backend_record(name: str, uri: Optional[str] = None) -> dict:
    """The vmem.json record of a backend a memory is about to use (a fresh Milvus collection name each time)."""
    if name not in BACKENDS:
        raise VmemError(f"unknown index backend {name!r}; accepted: {', '.join(BACKENDS)}")
    kind = REGISTRY[name]
    if not kind.schemes:
        if uri:
            raise VmemError(f"the {name} index {kind.without_uri} and takes no URI (got {uri!r}); "
                            "use --backend milvus with --index-uri")
        return {"name": name}
    return kind.record(uri)
