"""Uncertainty for the reproduction report: 95% intervals and paired tests.

Every accuracy in the claims table is a mean over test queries, so its interval is a percentile bootstrap over
queries; a comparison of two settings on the same queries (rule vs rule, pruned vs not, clean vs noisy) resamples the
queries once for both, so that what the two share cancels (a paired bootstrap), and McNemar's exact test gives the
p-value of the disagreements. What varies by seed (memory subsets, label noise) is reported as the mean over seeds
with a t interval. Everything is seeded: the same inputs give the same interval, which the report's byte-for-byte
check needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .experiments import auroc  # the Mann-Whitney AUROC the OOD experiment reports

CONFIDENCE = 0.95
DRAWS = 2000  # bootstrap resamples: the 2.5% and 97.5% quantiles move by well under 0.1 pp between seeds at 10k
SEED = 0
_CHUNK = 100  # resamples drawn at once (keeps the index matrix small on 10,000 queries)


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval, and how the interval was found."""

    estimate: float
    low: float
    high: float
    method: str

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "method": self.method}

    @classmethod
    def from_dict(cls, data: dict) -> "Interval":
        return cls(float(data["estimate"]), float(data["low"]), float(data["high"]), str(data["method"]))

    def scaled(self, factor: float) -> "Interval":
        """The same interval in other units (e.g. x100 for percentage points)."""
        low, high = sorted((self.low * factor, self.high * factor))
        return Interval(self.estimate * factor, low, high, self.method)


def _alpha() -> float:
    return (1 - CONFIDENCE) / 2


def _check_rows(arrays: Sequence[np.ndarray]) -> int:
    sizes = {len(a) for a in arrays}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"paired samples must be non-empty and of one length; got lengths {sorted(sizes)}")
    return sizes.pop()


def bootstrap(statistic: Callable[..., float], *samples: np.ndarray, paired: bool = True, draws: int = DRAWS,
              seed: int = SEED) -> Interval:
    """Percentile bootstrap of `statistic(*samples)`.

    paired: every sample is resampled with the same row indices (they are measurements on the same queries);
    otherwise each sample is resampled on its own (e.g. in- and out-of-distribution scores for an AUROC).
    """
    samples = tuple(np.asarray(s) for s in samples)
    estimate = float(statistic(*samples))
    rng = np.random.default_rng(seed)
    values = []
    if paired:
        n = _check_rows(samples)
    for _ in range(draws):
        if paired:
            rows = rng.integers(0, n, n)
            values.append(statistic(*(s[rows] for s in samples)))
        else:
            values.append(statistic(*(s[rng.integers(0, len(s), len(s))] for s in samples)))
    low, high = np.quantile(np.asarray(values, dtype=np.float64), [_alpha(), 1 - _alpha()])
    return Interval(estimate, float(low), float(high), f"bootstrap ({draws} resamples)")


def mean_interval(values: np.ndarray, draws: int = DRAWS, seed: int = SEED) -> Interval:
    """95% bootstrap interval of a mean over rows (e.g. per-query correctness: an accuracy). Vectorised: the
    accuracies of 2,000 resamples of 10,000 queries take well under a second."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"mean_interval needs a non-empty 1-D array, got shape {values.shape}")
    rng = np.random.default_rng(seed)
    n = len(values)
    means = []
    for start in range(0, draws, _CHUNK):
        rows = rng.integers(0, n, (min(_CHUNK, draws - start), n))
        means.append(values[rows].mean(axis=1))
    low, high = np.quantile(np.concatenate(means), [_alpha(), 1 - _alpha()])
    return Interval(float(values.mean()), float(low), float(high), f"bootstrap over {n:,} queries")


def paired_difference(a: np.ndarray, b: np.ndarray, draws: int = DRAWS, seed: int = SEED) -> Interval:
    """mean(a) - mean(b) on the same queries, with a paired bootstrap interval (a, b: per-query values)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    _check_rows((a, b))
    found = mean_interval(a - b, draws, seed)
    return Interval(found.estimate, found.low, found.high, f"paired bootstrap over {len(a):,} queries")


def mcnemar_p(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: of the queries where exactly one of a and b is right, is the split 50/50?"""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    _check_rows((a, b))
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return 1.0
    low = min(only_a, only_b)
    # log-space binomial terms: n can be thousands, 2**-n underflows a float
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(low + 1)]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(v - top) for v in logs)
    return float(min(1.0, 2 * tail))


def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom."""
    from scipy import stats as scipy_stats  # imported on use: `import vmem_core` does not pay for scipy

    return float(scipy_stats.t.ppf(1 - _alpha(), df))


def seed_interval(values: Sequence[float]) -> Interval:
    """Mean over seeds with a t interval (at least 2 seeds; 5 or more in the report)."""
    values = np.asarray(list(values), dtype=np.float64)
    if len(values) < 2:
        raise ValueError(f"a seed interval needs at least 2 seeds, got {len(values)}")
    mean = float(values.mean())
    half = t_quantile(len(values) - 1) * float(values.std(ddof=1)) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, f"t interval over {len(values)} seeds")


def auroc_interval(inside: np.ndarray, outside: np.ndarray, draws: int = 500, seed: int = SEED) -> Interval:
    """AUROC with a bootstrap interval that resamples each side on its own."""
    return bootstrap(auroc, np.asarray(inside), np.asarray(outside), paired=False, draws=draws, seed=seed)


def percentile_interval(samples: np.ndarray, q: float, draws: int = DRAWS, seed: int = SEED) -> Interval:
    """The q-th percentile of `samples` with a bootstrap interval (e.g. p95 of deletion times)."""
    samples = np.asarray(samples, dtype=np.float64)
    return bootstrap(lambda s: float(np.percentile(s, q)), samples, draws=draws, seed=seed)


def interval_or_none(data: Optional[dict]) -> Optional[Interval]:
    return None if data is None else Interval.from_dict(data)
