"""The narrow interface unlearning gets onto an open memory: what a purge reads about rows that exist (live or
tombstoned) and the one call that erases them from the index and the database files.

vmem_core.unlearn journals and certifies a purge; it reaches the memory's store and index only through `Erasure`,
typed against the `Erasable` protocol, so that `VisualMemory` itself carries no purge-only names and unlearning
knows nothing of how rows are stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence

import numpy as np

from ..errors import UnknownIdError, VmemError
from ..voting import DEFAULT_RELIABILITY_TOP_N

if TYPE_CHECKING:
    from ..backends.base import Evidence
    from ..storage.record_digests import PendingDigests
    from .core import VisualMemory


# Caches kept beside a memory that must forget erased exemplars (the re-rank cache's answers given with them in view)
# register `forget(memory_path, ids)` here, so that neither the memory nor unlearning imports any of them.
_forgetters: list[Callable[[Path, list[int]], None]] = []


def forget_on_purge(forget: Callable[[Path, list[int]], None]) -> None:
    """Register a cache to be told, by every purge (and every interrupted purge finished on open), what went."""
    if forget not in _forgetters:
        _forgetters.append(forget)


class Erasable(Protocol):
    """What a purge needs from a memory's storage (`Erasure` is the one implementation)."""

    def check_purgeable(self, ids: Sequence[int]) -> list[int]: ...

    def thumbnail_places(self, ids: Sequence[int]) -> list: ...

    def erase_rows(self, ids: Sequence[int], purge_id: str, details: dict,
                   thumbnail_places: Sequence) -> list["Evidence"]: ...

    def record_certificate(self, purge_id: str, digest: str) -> None: ...

    def thumbnails_kept_elsewhere(self, thumbnails: Sequence[bytes], excluding: Sequence[int]) -> set[bytes]: ...

    def all_ids(self) -> np.ndarray: ...

    def digest_rows(self) -> list: ...

    def plain_rows(self, ids: Sequence[int]) -> list: ...

    def mapped_vectors(self, ids: Sequence[int]) -> np.ndarray: ...

    def start_record_digests(self) -> "PendingDigests": ...

    def open_index(self) -> None: ...


class Erasure:
    """`Erasable` over one open memory (its store, index, lock and owner lock)."""

    def __init__(self, memory: "VisualMemory") -> None:
        self._memory = memory

    def check_purgeable(self, ids: Sequence[int]) -> list[int]:
        """The ids, sorted and unique, if every one has a row (live or tombstoned); else UnknownIdError."""
        ids = sorted({int(i) for i in ids})
        if not ids:
            raise VmemError("nothing to purge: give exemplar ids, or tombstone some first (`vmem delete`)")
        known = set(self._memory._store.all_ids().tolist())
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise UnknownIdError(f"unknown or already purged exemplar id(s): {', '.join(map(str, unknown[:20]))}")
        return ids

    def thumbnail_places(self, ids: Sequence[int]) -> list:
        """Where each exemplar's thumbnail lies in the vault, read before its row goes."""
        return self._memory._store.thumbnail_places(ids)

    def erase_rows(
        self, ids: Sequence[int], purge_id: str, details: dict, thumbnail_places: Sequence
    ) -> list["Evidence"]:
        """Remove exemplars' bytes from the index and the database files, idempotently, and tell every registered
        cache to forget them. Unjournalled and uncertified: call `vmem_core.unlearn.purge`, which is both. Returns
        what the index backend did and verified.

        Order matters: the index goes first, while the vault still holds the vectors it must find there."""
        memory = self._memory
        with memory._lock.write():
            evidence = memory._index.purge(ids, memory._store.vault.read_vectors(ids), memory._store.seq())
            memory._store.purge(ids, purge_id, details, [tuple(p) for p in thumbnail_places])
            memory._refresh_labels()
            # rows that listed a purged item keep the rest; refilled as far as reliability reads (the OOD
            # threshold reads less), not to curation's depth: that ~10,000 searches after 200 purged at 60,000
            memory._neighbours.after_purge(lambda: memory.reliability.table(need=DEFAULT_RELIABILITY_TOP_N))
            memory._keep_owner_lock()
        for forget in _forgetters:
            forget(memory.path, [int(i) for i in ids])
        return evidence

    def record_certificate(self, purge_id: str, digest: str) -> None:
        """Log the digest of a purge's certificate, so that `vmem purge verify` can tell it unaltered."""
        self._memory._store.log_event("certify", {"purge_id": purge_id, "certificate_sha256": digest})

    def thumbnails_kept_elsewhere(self, thumbnails: Sequence[bytes], excluding: Sequence[int]) -> set[bytes]:
        return self._memory._store.thumbnails_kept_elsewhere(thumbnails, excluding)

    def all_ids(self) -> np.ndarray:
        """Every exemplar with a row, live or tombstoned."""
        return self._memory._store.all_ids()

    def digest_rows(self) -> list[tuple[int, str, bool, Optional[str]]]:
        """(id, label, tombstoned, image sha256) of every row, by id."""
        return self._memory._store.digest_rows()

    def plain_rows(self, ids: Sequence[int]) -> list[tuple[int, str, str, Optional[str], Optional[bytes]]]:
        """(id, label, source, image sha256, thumbnail) of the given ids, by id."""
        return self._memory._store.plain_rows(ids)

    def mapped_vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Every stored embedding, read-only and uncopied, record i for id i (`Vault.mapped_vectors`): a purge reads
        the rows of `ids` in place, once per side."""
        return self._memory._store.vault.mapped_vectors(ids)

    def start_record_digests(self) -> "PendingDigests":
        """The sha256 of every stored embedding as the vault holds it now, started in a helper process (collected by
        `StoredRows.digests`): a purge hashes each side while this process loads the index or runs its checks."""
        from ..storage.record_digests import PendingDigests

        vault = self._memory._store.vault
        return PendingDigests(vault.vectors_path, vault.record, vault.record_count())

    def open_index(self) -> None:
        """Load the index now (a memory opens it on first use): a purge loads it while its digests are computed."""
        self._memory._index
