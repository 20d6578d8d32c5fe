"""The evidence of the claims judged on measurements other than the embeddings: the delete latency and the purge
(from `analysis.unlearning.measure_unlearning`'s result) and re-ranking (from its own section's result).

The embedding-based evidence is `vmem_core.analysis.claim_evidence`, which re-exports these.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import stats


def unlearning_timing(unlearning: Optional[dict]) -> dict:
    """Evidence for the delete-latency and purge claims from `analysis.unlearning.measure_unlearning`'s result."""
    if not unlearning:
        reason = "the unlearning measurement did not run"
        return {"delete-latency": {"not_comparable": reason}, "purge": {"not_comparable": reason}}
    samples = unlearning.get("delete_ms_all")
    out = {}
    if samples:
        p95 = stats.percentile_interval(np.asarray(samples), 95)
        median = float(np.median(samples))
        out["delete-latency"] = {"interval": p95.to_dict(), "note": f"median {median:.2f} ms, "
                                                                    f"{len(samples)} deletions from "
                                                                    f"{unlearning['exemplars']:,}"}
    else:
        out["delete-latency"] = {"not_comparable": "per-deletion times were not recorded"}
    purge = unlearning["purge"]
    per = 1000 * purge["physical_seconds"] / purge["exemplars"]
    failed = [c["name"] for c in unlearning["certificate"]["checks"] if not c["passed"]]
    out["purge"] = {"interval": stats.Interval(per, per, per, "one purge of all deletions").to_dict(),
                    "certificate_passed": bool(unlearning["certificate"]["passed"]),
                    "failed_checks": ", ".join(failed),
                    "note": f"one purge of {purge['exemplars']} exemplars: {purge['physical_seconds']:.1f} s "
                            f"({purge['with_checks_seconds']:.0f} s with checks); no per-exemplar spread"}
    return out


def reranking_evidence(reranking: Optional[dict]) -> dict:
    if not reranking or reranking.get("status") != "measured":
        return {"not_comparable": (reranking or {}).get("reason", "no model reachable here")}
    return {"not_comparable": "re-ranking measured on a sample without per-query records; see its section"}
