"""What the memory's nouns (exemplars, search, reliability, index) share: a part over one open memory, and the check
every vector passes before it is stored or searched."""

from __future__ import annotations

import numpy as np

from ..errors import AccessDeniedError, BadVectorError


class RefusedChange(AccessDeniedError, AttributeError):
    """A name a reader (or a reader's part) does not have, which is every write: refused with the line a viewer reads,
    and still an AttributeError, so that `hasattr(reader, "delete")` is False."""


def refuse(name: str) -> RefusedChange:
    return RefusedChange(f"viewers cannot change this memory ({name} refused); sign in as an editor")


def check_embeddings(embeddings: np.ndarray, dim: int) -> np.ndarray:
    array = np.asarray(embeddings, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise BadVectorError(f"embeddings have shape {np.shape(embeddings)}; this memory accepts (n, {dim})")
    if not np.all(np.isfinite(array)):
        raise BadVectorError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if np.any(norms < 1e-12):
        raise BadVectorError(f"embedding row(s) {np.flatnonzero(norms[:, 0] < 1e-12)[:10].tolist()} are zero vectors")
    return array / norms


class Part:
    """A noun over one open memory. Its methods were the memory's own and read its private state (`self._store`,
    `self._lock`, `self._index`, `self._table`, ...) as before: private names pass through to the memory, public ones
    do not, so a part hands out nothing of the memory but what it defines."""

    __slots__ = ("_memory",)
    _read_half = False  # a reader's part (ExemplarReads, IndexReads): a name it lacks is a change a viewer may not make

    def __init__(self, memory) -> None:
        object.__setattr__(self, "_memory", memory)

    def __getattr__(self, name: str):
        if name.startswith("_") and not name.startswith("__"):
            return getattr(self._memory, name)
        if self._read_half:
            raise refuse(name)
        raise AttributeError(f"{type(self).__name__} has no {name!r}")

    def __setattr__(self, name: str, value) -> None:
        # a part keeps no state of its own: an assignment meant for the memory must say so (self._memory.x = ...)
        raise AttributeError(f"cannot set {name!r} on {type(self).__name__}")
