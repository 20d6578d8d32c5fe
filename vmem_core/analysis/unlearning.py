"""Unlearning measured on a real memory, as the paper states it: how long deleting one exemplar takes (the paper:
under 20 ms), how long the physical purge takes, and whether the result is exact (the memory after delete + purge
predicts every query as one built from scratch without those exemplars would, and no file holds their bytes).

The deletion measured is vmem's tombstone (`VisualMemory.delete`): from that moment no query sees the exemplar,
which is what the paper's deletion does. The purge that removes its bytes, and the certificate that checks the
result, are `vmem_core.unlearn.purge`'s: this module times them and reads the certificate, it checks nothing itself.
The memory is changed: measure on a copy.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import VmemError
from ..memory import VisualMemory
from ..unlearn import PAPER_DELETION_MS, purge

DEFAULT_DELETIONS = 200


def percentile_ms(seconds, q: float) -> float:
    """The q-th percentile of durations in seconds, in milliseconds.

    >>> percentile_ms([0.001, 0.002, 0.003], 50)
    2.0
    """
    return float(np.percentile(np.asarray(seconds, np.float64), q) * 1000)


def delete_one_at_a_time(
    memory: VisualMemory, ids: Sequence[int], clock: Optional[Callable[[], float]] = None
) -> list[float]:
    """Delete `ids` one at a time, each timed by `clock` (default: time.perf_counter, looked up at the call), as the
    paper times a deletion; returns each one's seconds.

    Raises:
        VmemError: an id is not live (checked before any is deleted: then nothing changed), or a deletion failed
            (e.g. another session deleted it first) after the ones before it took effect: the message names those.
    """
    clock = clock or time.perf_counter
    ids = [int(i) for i in ids]
    missing = [i for i, c in zip(ids, memory.table.class_indices(ids)) if c < 0]
    if missing:
        raise VmemError(f"Nothing changed: no live exemplar with id(s) {', '.join(map(str, missing))}")
    durations: list[float] = []
    for exemplar_id in ids:
        started = clock()
        try:
            memory.exemplars.delete([exemplar_id])
        except VmemError as exc:
            done = ids[:len(durations)]
            if not done:
                raise VmemError(f"Nothing changed: {exc}") from exc
            raise VmemError(f"Forgot {len(done)} exemplar(s) ({', '.join(map(str, done))}), then id {exemplar_id} "
                            f"failed: {exc}") from exc
        durations.append(clock() - started)
    return durations


def measure_unlearning(
    memory: VisualMemory,
    deletions: int = DEFAULT_DELETIONS,
    probes: Optional[np.ndarray] = None,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Delete `deletions` exemplars one at a time (each timed), purge them all in one certified purge (timed), and
    report the certificate's checks.

    Args:
        memory: a memory that may be changed (its exemplars are deleted and purged).
        deletions: exemplars deleted, drawn at random (seeded) among the live ones.
        probes: query embeddings for the certificate's exactness check (e.g. every test query); default: the
            certificate's own (the removed embeddings and 200 live exemplars).
        clock: seconds, monotonic (tests pass a counter).

    Returns:
        {"exemplars", "deletions", "delete_ms": {"median", "p95", "max"}, "purge": {"exemplars",
        "physical_seconds", "with_checks_seconds"}, "probes", "certificate": {"passed", "checks": [...]},
        "paper_deletion_ms"}.

    Raises:
        VmemError: `deletions` is below 1 or above the live exemplars.
    """
    live = len(memory)
    if not 1 <= int(deletions) <= live:
        raise VmemError(f"deletions must be between 1 and the {live:,} live exemplars, got {deletions}")
    chosen = np.random.default_rng(seed).choice(memory.table.ids, int(deletions), replace=False)
    durations = delete_one_at_a_time(memory, chosen.tolist(), clock)
    started = clock()
    certificate = purge(memory, chosen.tolist(), probes=probes)
    with_checks = clock() - started
    return {
        "exemplars": live,
        "deletions": int(deletions),
        "delete_ms": {"median": percentile_ms(durations, 50), "p95": percentile_ms(durations, 95),
                      "max": float(max(durations) * 1000)},
        "delete_ms_all": [float(d * 1000) for d in durations],  # every deletion, for the report's interval on p95
        "purge": {"exemplars": int(deletions), "physical_seconds": certificate.purge_seconds,
                  "with_checks_seconds": with_checks},
        "probes": None if probes is None else int(len(probes)),
        "certificate": {"passed": certificate.passed,
                        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail}
                                   for c in certificate.checks]},
        "paper_deletion_ms": PAPER_DELETION_MS,
    }
