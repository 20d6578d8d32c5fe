"""The sha256 of every fixed-size record of a file (the vault's embeddings), computed by a helper process on another
core while this one goes on.

A purge hashes every embedding once per side (~0.3 s at 60,000 x 1280). A thread cannot overlap that with the work
beside it: each 5 KiB hash takes the GIL back, and hnswlib's index load holds the GIL for its whole ~0.5 s. A helper
process running the standard library alone (no numpy, no vmem: `python -I -S`, started in ~15 ms) can. Where it
cannot be started, fails, or answers with the wrong length, the digests are computed here instead: the same ones, so
what a purge proves never depends on the helper.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np

log = logging.getLogger(__name__)

DIGEST = 32  # bytes of a sha256
HELPER_TIMEOUT_S = 600.0  # a helper that takes longer is stopped and the digests computed here

_HELPER = r"""
import hashlib, mmap, sys
path, record, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = bytearray(32 * count)
if count:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), record * count, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        for i in range(count):
            out[32 * i:32 * i + 32] = hashlib.sha256(view[i * record:(i + 1) * record]).digest()
        view.release()
sys.stdout.buffer.write(out)
"""


def record_digests(records: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """(len(ids), 32) uint8: the sha256 of each id's record (its bytes), hashed where it lies, in this process. One
    thread: split over two, the rows' hashes ran slower (0.38-0.42 s against 0.29 s at 60,000 x 1280), each 5 KiB
    hash letting go of the GIL and queueing to take it back."""
    out = bytearray(DIGEST * len(ids))
    record = records.shape[1] * records.itemsize if records.ndim == 2 else 0
    flat = memoryview(np.ascontiguousarray(records)).cast("B") if len(ids) else b""
    for n, i in enumerate(np.asarray(ids, dtype=np.int64).tolist()):
        out[DIGEST * n:DIGEST * n + DIGEST] = hashlib.sha256(flat[i * record:(i + 1) * record]).digest()
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(-1, DIGEST)


class PendingDigests:
    """The digests of records 0..count-1 of a file, started in a helper process now and collected by `of`."""

    def __init__(self, path: Path, record: int, count: int) -> None:
        self.path, self.record, self.count = Path(path), int(record), int(count)
        self._process: Optional[subprocess.Popen] = None
        self._all: Optional[np.ndarray] = None
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _HELPER, str(self.path), str(self.record), str(self.count)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except (OSError, ValueError) as exc:  # no interpreter to start (an embedded one), no processes left
            log.info("record digests of %s computed in this process: no helper (%s)", self.path, exc)

    def of(self, ids: np.ndarray, records: Callable[[], np.ndarray]) -> np.ndarray:
        """(len(ids), 32) digests of the records of `ids`: the helper's, or, where it gave none, computed here over
        `records()` (the file's records, mapped)."""
        ids = np.asarray(ids, dtype=np.int64)
        every = self._collect()
        if every is not None and (not len(ids) or int(ids.max()) < len(every)):
            return every[ids]
        return record_digests(records(), ids)

    def _collect(self) -> Optional[np.ndarray]:
        if self._all is not None or self._process is None:
            return self._all
        process = self._process
        try:
            out, _ = process.communicate(timeout=HELPER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.close()
            log.warning("record digests of %s: the helper took over %.0f s; computed in this process", self.path,
                        HELPER_TIMEOUT_S)
            return None
        except BaseException:  # interrupted (Ctrl-C): no helper is left blocked on a full pipe
            self.close()
            raise
        self._process = None
        if process.returncode != 0 or len(out) != DIGEST * self.count:
            log.warning("record digests of %s: the helper failed (exit %s, %d bytes for %d records); computed in "
                        "this process", self.path, process.returncode, len(out), self.count)
            return None
        self._all = np.frombuffer(out, dtype=np.uint8).reshape(-1, DIGEST)
        return self._all

    def close(self) -> None:
        """Stop a helper whose answer is not wanted (the purge failed before it was collected)."""
        if self._process is not None:
            self._process.kill()
            self._process.communicate()
            self._process = None
