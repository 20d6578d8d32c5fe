"""Out-of-distribution flags: is a query's nearest exemplar unusually far, compared with the memory's own items?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..memory import VisualMemory

DEFAULT_QUANTILE = 0.99


@dataclass(frozen=True)
class OodVerdict:
    distance: float  # the query's nearest-exemplar distance, the figure it was judged on
    threshold: float  # that distance for the given quantile of memory items (leave-one-out)
    quantile: float
    is_ood: bool

    def explain(self) -> str:
        verdict = "unusually far" if self.is_ood else "within the usual range"
        return (
            f"nearest exemplar at distance {self.distance:.3f}: {verdict} ({self.quantile:.0%} of memory items have "
            f"a neighbour within {self.threshold:.3f})"
        )


def nearest_distance_threshold(memory: VisualMemory, quantile: float = DEFAULT_QUANTILE) -> float:
    """The `quantile` of memory items' leave-one-out nearest-neighbour distances (inf with fewer than 2 items)."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")

    def compute() -> float:
        _, _, distances = memory.search.memory_neighbors(1)
        if distances.size == 0:
            return float("inf")
        return float(np.quantile(distances[:, 0], quantile))

    return memory.derived(("ood-threshold", quantile), compute)


def judge(memory: VisualMemory, nearest_distance: float, quantile: float = DEFAULT_QUANTILE) -> OodVerdict:
    threshold = nearest_distance_threshold(memory, quantile)
    return OodVerdict(float(nearest_distance), threshold, quantile, bool(nearest_distance > threshold))
