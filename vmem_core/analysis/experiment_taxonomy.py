"""Experiment 6 of `vmem_core.analysis.experiments` (which re-exports it): accuracy at each level of a label taxonomy,
and a held-out class added back a few exemplars at a time, judged at every level.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import DatasetError, VmemError
from ..voting import RULES, VoteSettings
from .experiment_curves import FIXED_K_SETTINGS, _at, _check_labels, _curves, predictions_every_k
from .neighbor_cache import NeighborCache

DEFAULT_ADDED = (0, 1, 2, 5, 10, 20)
PAPER_ADDED = (0, 1, 2, 5, 10, 20, 50)  # the paper adds 0..50 exemplars of the held-out class back


# --- 6. taxonomy ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Taxonomy:
    """Levels of labels, finest first: levels[0] is the memory's own label; mappings[i] sends a label to level i."""

    levels: tuple[str, ...]
    mappings: tuple[dict[str, str], ...]

    def map(self, labels: np.ndarray, level: int) -> np.ndarray:
        mapping = self.mappings[level]
        return np.asarray([mapping.get(label, label) for label in labels], dtype=object)


def load_taxonomy(path: Path) -> Taxonomy:
    """A CSV with a header naming the levels, finest first (e.g. `class,group,supergroup`), one row per label.

    Raises:
        DatasetError: missing file, fewer than two columns, a label listed twice or a blank cell.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such taxonomy file (expected a CSV: class,group,... one row per label)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if not rows or len(rows[0]) < 2:
        raise DatasetError(f"{path}: needs a header with at least two levels, e.g. class,group")
    header = [cell.strip() for cell in rows[0]]
    mappings: list[dict[str, str]] = [{} for _ in header]
    for line, row in enumerate(rows[1:], start=2):
        cells = [cell.strip() for cell in row]
        if len(cells) != len(header) or not all(cells):
            raise DatasetError(f"{path}:{line}: expected {len(header)} non-empty cells ({','.join(header)}), "
                               f"got {row}")
        if cells[0] in mappings[0]:
            raise DatasetError(f"{path}:{line}: label {cells[0]!r} listed twice")
        for level, cell in enumerate(cells):
            mappings[level][cells[0]] = cell
    return Taxonomy(tuple(header), tuple(mappings))


def _check_taxonomy(cache: NeighborCache, taxonomy: Taxonomy) -> None:
    missing = sorted(set(cache.memory_labels.tolist()) - set(taxonomy.mappings[0]))
    if missing:
        raise VmemError(f"the taxonomy has no row for memory label(s): {', '.join(missing)}")


def taxonomy_accuracy(
    cache: NeighborCache, taxonomy: Taxonomy, rules: Sequence[str] = RULES, settings: VoteSettings = FIXED_K_SETTINGS
) -> dict[str, dict[str, float]]:
    """Experiment 6a: accuracy at each level (memory and query labels mapped to that level before voting):
    level -> rule -> accuracy at settings.k."""
    _check_taxonomy(cache, taxonomy)
    out = {}
    for level, name in enumerate(taxonomy.levels):
        mapped = NeighborCache(cache.memory_vectors, taxonomy.map(cache.memory_labels, level), cache.query_vectors,
                                taxonomy.map(cache.query_labels, level), cache.positions, cache.distances,
                                cache.self_positions)
        out[name] = {r: _at(c, settings.k)
                     for r, c in _curves(mapped, mapped.positions, mapped.distances, rules, settings).items()}
    return out


def held_out_class_levels(
    cache: NeighborCache, taxonomy: Taxonomy, held_out: str, added: Sequence[int] = DEFAULT_ADDED,
    seeds: Sequence[int] = (0, 1, 2), settings: VoteSettings = VoteSettings(k=1),
    others_per_class: Optional[int] = None,
):
    """Experiment 6b: queries of a class the memory lacks, then with n = 0, 1, 2, 5, ... of its exemplars added;
    accuracy at each taxonomy level at settings.k (default: k = 1, rank voting). others_per_class: every other
    class keeps only that many random exemplars (per seed; the paper keeps 50). DataFrame: added, seed, level,
    accuracy."""
    import pandas as pd

    _check_taxonomy(cache, taxonomy)
    _check_labels(cache, [held_out], "held-out class must be a memory label")
    members = np.flatnonzero(cache.memory_labels == held_out)
    queries = cache.subset_queries(np.flatnonzero(cache.query_labels == held_out))
    if not len(queries):
        raise VmemError(f"no query is labelled {held_out!r}: nothing to measure")
    rows = []
    if any(int(a) < 0 for a in added):
        raise VmemError(f"exemplars to add must be 0 or more, got {list(added)}")
    others = [np.flatnonzero(cache.memory_labels == name) for name in sorted(set(cache.memory_labels.tolist()))
              if name != held_out]
    for n in sorted({min(int(a), len(members)) for a in added}):  # more than the memory holds: all of them
        # adding none is the same subset for every seed, unless the other classes are sampled
        for seed in (seeds if n or others_per_class is not None else seeds[:1]):
            rng = np.random.default_rng(seed)
            keep = cache.memory_labels != held_out
            if others_per_class is not None:
                keep[:] = False
                for other in others:
                    keep[rng.choice(other, min(int(others_per_class), len(other)), replace=False)] = True
            keep[rng.choice(members, n, replace=False)] = True
            positions, distances = queries.restricted(keep, settings.k)
            for level, name in enumerate(taxonomy.levels):
                predictions, truth = predictions_every_k(positions, distances,
                                                         taxonomy.map(cache.memory_labels, level),
                                                         taxonomy.map(queries.query_labels, level), settings)
                rows.append({"added": n, "seed": seed, "level": name,
                             "accuracy": float(np.mean(predictions[:, positions.shape[1] - 1] == truth))})
    return pd.DataFrame(rows)


def taxonomy_every_class(
    cache: NeighborCache, taxonomy: Taxonomy, others_per_class: int = 50, added: Sequence[int] = DEFAULT_ADDED,
    seeds: Sequence[int] = (0, 1, 2), settings: VoteSettings = VoteSettings(k=1),
):
    """Experiment 6b in the paper's protocol: every class held out in turn, every other class capped at
    `others_per_class` exemplars, n of the held-out class added back, judged at settings.k (k = 1). DataFrame:
    held_out, added, seed, level, accuracy (average over held_out for the paper's curve)."""
    import pandas as pd

    frames = []
    for held_out in sorted(set(cache.memory_labels.tolist())):
        if not (cache.query_labels == held_out).any():
            continue  # no query of that class: nothing to measure
        frame = held_out_class_levels(cache, taxonomy, held_out, added, seeds, settings, others_per_class)
        frames.append(frame.assign(held_out=held_out))
    if not frames:
        raise VmemError("no query carries a memory label: nothing to measure")
    return pd.concat(frames, ignore_index=True)
