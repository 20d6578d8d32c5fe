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


from .audit import AuditReads
from .exemplars import ExemplarReads
from .index import IndexReads
from .part import RefusedChange, refuse
from .reliability import ReliabilityReads
from .search import Search

if TYPE_CHECKING:
    from ..classification import Classification
    from ..encoders import Encoder
    from ..ingest.images import ImageInput
    from ..label_table import LabelTable
    from ..voting import VoteSettings


class MemoryReader:
    """Read-only access to one open memory (`VisualMemory.reader()`): every method reads, none changes it."""

    __slots__ = ("_memory",)

    def __init__(self, memory) -> None:  # a VisualMemory (core imports this module)
        object.__setattr__(self, "_memory", memory)

    def __getattr__(self, name: str):
        # only reached for names this class does not define: whatever they are (a write, or a method added to
        # VisualMemory since), a reader does not have them
        if name.startswith("_"):
            raise AttributeError(name)
        raise refuse(name)

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
    def encoder(self) -> "Encoder":
        return self._memory.encoder

    @property
    def table(self) -> "LabelTable":
        return self._memory.table  # immutable: replaced whole by every change

    @property
    def change_counter(self) -> int:
        return self._memory.change_counter

    def __len__(self) -> int:
        return len(self._memory)

    def derived(self, key: object, compute: Callable[[], object]) -> object:
        """A value computed from the contents, cached until the next change (a cache in this process, not a change
        to the memory)."""
        return self._memory.derived(key, compute)

    # --- the nouns, each the reading half of the memory's --------------------------------------------------------
    @property
    def exemplars(self) -> ExemplarReads:
        return ExemplarReads(self._memory)

    @property
    def search(self) -> Search:
        return Search(self._memory)  # every search reads

    @property
    def reliability(self) -> ReliabilityReads:
        return ReliabilityReads(self._memory)  # reads, and caches until the next change

    @property
    def index(self) -> IndexReads:
        return IndexReads(self._memory)

    @property
    def audit(self) -> AuditReads:
        return AuditReads(self._memory._store)

    def classify(self, images: Sequence["ImageInput"], settings: Optional["VoteSettings"] = None,
                 **changes) -> list["Classification"]:
        return self._memory.classify(images, settings, **changes)

    def stats(self) -> dict:
        return self._memory.stats()

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
