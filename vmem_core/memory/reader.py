"""A reader: what a viewer gets of a memory. It reads, searches and classifies, and has no way to change anything.

A role fails closed by construction, not by a list of refused names: `MemoryReader` is a class of its own that
defines only reads, and hands out no writable handle (no index backend, no store connection, no VisualMemory, and
copies of the memory's config). A write method added to VisualMemory later is not on it until someone writes it here.

DuckDB cannot open one file twice in one process with different settings, so an in-process reader cannot hold a
read-only connection of its own while the app holds the read-write one: it keeps the open memory privately and
exposes only the read queries. A separate process that only reads opens the memory read-only instead
(`VisualMemory.open(path, read_only=True)`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from ..errors import AccessDeniedError

if TYPE_CHECKING:
    from ..backends.hnsw_index import IndexParams
    from ..classification import Classification
    from ..encoders import Encoder
    from ..ingest.images import ImageInput
    from ..label_table import LabelTable
    from ..voting import VoteSettings
    from .audit import Audit
    from .core import VisualMemory


class RefusedChange(AccessDeniedError, AttributeError):
    """A name a reader does not have (every write): refused with the line a viewer reads, and still an
    AttributeError, so that `hasattr(reader, "delete")` is False."""


class MemoryReader:
    """Read-only access to one open memory (`VisualMemory.reader()`): every method reads, none changes it."""

    __slots__ = ("_memory",)

    def __init__(self, memory: "VisualMemory") -> None:
        object.__setattr__(self, "_memory", memory)

    def __getattr__(self, name: str):
        # only reached for names this class does not define: whatever they are (a write, or a method added to
        # VisualMemory since), a reader does not have them
        if name.startswith("_"):
            raise AttributeError(name)
        raise RefusedChange(f"viewers cannot change this memory ({name} refused); sign in as an editor")

    def __setattr__(self, name: str, value) -> None:
        raise RefusedChange(f"viewers cannot change the memory's {name}")

    # --- what the memory is ---------------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._memory.path

    @property
    def config(self) -> dict:
        """A copy of the memory's vmem.json (changing it changes nothing)."""
        return copy.deepcopy(self._memory.config)

    @property
    def dim(self) -> int:
        return self._memory.dim

    @property
    def index_params(self) -> "IndexParams":
        return self._memory.index_params  # frozen

    @property
    def read_only(self) -> bool:
        return True

    @property
    def encoder(self) -> "Encoder":
        return self._memory.encoder

    @property
    def table(self) -> "LabelTable":
        return self._memory.table

    @property
    def labels(self) -> list[str]:
        return self._memory.labels

    @property
    def change_counter(self) -> int:
        return self._memory.change_counter

    @property
    def audit(self) -> "Audit":
        return self._memory.audit  # reads only (vmem_core.memory.audit)

    def __len__(self) -> int:
        return len(self._memory)

    def derived(self, key: object, compute: Callable[[], object]) -> object:
        """A value computed from the contents, cached until the next change (a cache in this process, not a change
        to the memory)."""
        return self._memory.derived(key, compute)

    def class_indices(self, ids) -> np.ndarray:
        return self._memory.class_indices(ids)

    def label_of(self, exemplar_id: int) -> str:
        return self._memory.label_of(exemplar_id)

    def stats(self) -> dict:
        return self._memory.stats()

    def devices(self) -> dict:
        return self._memory.devices()

    # --- exemplars ------------------------------------------------------------------------------------------------
    def exemplars(self, ids: Sequence[int]):
        return self._memory.exemplars(ids)

    def browse(self, **filters):
        return self._memory.browse(**filters)

    def count(self, **filters) -> int:
        return self._memory.count(**filters)

    def label_changes(self, limit: int = 100):
        return self._memory.label_changes(limit)

    def thumbnails(self, ids: Sequence[int]) -> dict[int, Optional[bytes]]:
        return self._memory.thumbnails(ids)

    def embeddings(self, ids: Optional[Sequence[int]] = None) -> tuple[np.ndarray, np.ndarray]:
        return self._memory.embeddings(ids)

    def stored_embeddings(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        return self._memory.stored_embeddings(ids)

    def tombstoned_ids(self) -> list[int]:
        return self._memory.tombstoned_ids()

    def near_duplicates_of(self, ids: Sequence[int], *args, **kwargs) -> dict[int, list[tuple[int, float]]]:
        return self._memory.near_duplicates_of(ids, *args, **kwargs)

    # --- search, reliability, votes -------------------------------------------------------------------------------
    def search(self, embeddings: np.ndarray, k: int, allowed_ids: Optional[np.ndarray] = None,
               labels: Optional[Sequence[str]] = None) -> tuple[np.ndarray, np.ndarray]:
        return self._memory.search(embeddings, k, allowed_ids=allowed_ids, labels=labels)

    def neighbors(self, embeddings: np.ndarray, settings: Optional["VoteSettings"] = None):
        return self._memory.neighbors(embeddings, settings)

    def memory_neighbors(self, k: int, ids: Optional[Sequence[int]] = None):
        return self._memory.memory_neighbors(k, ids)

    def kept_ids(self, settings: Optional["VoteSettings"] = None) -> np.ndarray:
        return self._memory.kept_ids(settings)

    def reliability(self, *args, **kwargs) -> dict[int, int]:
        return self._memory.reliability(*args, **kwargs)

    def neighbor_reliability(self, neighbor_ids: np.ndarray, *args, **kwargs) -> np.ndarray:
        return self._memory.neighbor_reliability(neighbor_ids, *args, **kwargs)

    def vote(self, neighbor_ids: np.ndarray, distances: np.ndarray, settings: Optional["VoteSettings"] = None,
             table: Optional["LabelTable"] = None):
        return self._memory.vote(neighbor_ids, distances, settings, table)

    def classify_embeddings(self, embeddings: np.ndarray, settings: Optional["VoteSettings"] = None,
                            names: Optional[Sequence[Optional[str]]] = None, **changes) -> list["Classification"]:
        return self._memory.classify_embeddings(embeddings, settings, names, **changes)

    def classify(self, images: Sequence["ImageInput"], settings: Optional["VoteSettings"] = None,
                 **changes) -> list["Classification"]:
        return self._memory.classify(images, settings, **changes)

    def load_images(self, images: Sequence["ImageInput"], names: Optional[Sequence[str]] = None):
        return self._memory.load_images(images, names)

    def encode(self, images: Sequence["ImageInput"], progress=None) -> np.ndarray:
        return self._memory.encode(images, progress)

    def reader(self) -> "MemoryReader":
        return self


class OpenReader(MemoryReader):
    """A reader that owns the memory it reads (`VisualMemory.open_reader`): opened read-only, closed with it."""

    __slots__ = ()

    def close(self) -> None:
        """Release the memory (opened read-only: closing it persists nothing)."""
        self._memory.close()

    def __enter__(self) -> "OpenReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
