"""The paper's claims, fixed before the run: what each says, where it stands, its number, our protocol, and the
criterion that decides it.

Each claim names the quantity we measure and the region of values that agrees with the paper; the region's edges are
derived from the paper's own figures or text (`tolerance` says how). A verdict compares the measured 95% interval with
that region:

- holds: the whole interval lies inside the region;
- does not hold: the whole interval lies outside it;
- inconclusive: the interval straddles an edge;
- not comparable: the evidence is missing or cannot speak to the claim (the reason is given).

The registry is data plus one verdict function per claim; the report (scripts/results.py) only renders what these
functions return, so a verdict can be checked without running anything. A criterion changed after seeing results
keeps its old form in CHANGES, with the reason, and the report prints that log.

Evidence per claim is a plain dict (JSON in results.json):
    {"interval": {"estimate", "low", "high", "method"}, ...claim-specific fields}
or {"not_comparable": "<reason>"}. Units: accuracies and differences as fractions (0.01 = 1 pp), AUROC as a number,
times in milliseconds, counts as integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from .stats import Interval

HOLDS, FAILS, INCONCLUSIVE, NOT_COMPARABLE = "holds", "does not hold", "inconclusive", "not comparable"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_COMPARABLE)


@dataclass(frozen=True)
class Region:
    """The values of the measured quantity that agree with the paper: low <= value <= high."""

    low: float = -math.inf
    high: float = math.inf
    strict: bool = False  # a claim of a sign ("raises", "beats"): the interval must lie above `low`, not touch it

    def contains(self, interval: Interval) -> bool:
        above = self.low < interval.low if self.strict else self.low <= interval.low
        return above and interval.high <= self.high

    def excludes(self, interval: Interval) -> bool:
        below = interval.high <= self.low if self.strict else interval.high < self.low
        return below or interval.low > self.high


@dataclass(frozen=True)
class Verdict:
    verdict: str
    ours: str  # our number with its interval, as the table prints it
    reason: str = ""  # why (always for not comparable; the deciding fact otherwise)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")

    def text(self) -> str:
        return f"{self.verdict} ({self.reason})" if self.reason else self.verdict


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str  # what the paper claims, in our words
    where: str  # section, figure, table or appendix of arXiv 2408.08172 (v3 / ICML 2025)
    paper: str  # the paper's number
    protocol: str  # what we measure, on which data
    quantity: str  # the measured quantity the region is about
    region: Region
    tolerance: str  # how the region's edges were derived from the paper
    unit: str  # "pp", "%", "auroc", "ms", "count", "log10"
    judge: Callable[["Claim", Mapping], Verdict] = field(repr=False, compare=False, default=None)

    def verdict(self, evidence: Optional[Mapping]) -> Verdict:
        if not evidence:
            return Verdict(NOT_COMPARABLE, "", "not run in this report")
        if evidence.get("not_comparable"):
            return Verdict(NOT_COMPARABLE, evidence.get("ours", ""), str(evidence["not_comparable"]))
        return (self.judge or judge_interval)(self, evidence)

    def criterion(self) -> str:
        """The region in words, in the claim's unit."""
        low, high = (fmt_value(v, self.unit) for v in (self.region.low, self.region.high))
        if math.isinf(self.region.low):
            return f"{self.quantity} <= {high}"
        if math.isinf(self.region.high):
            return f"{self.quantity} {'>' if self.region.strict else '>='} {low}"
        return f"{low} <= {self.quantity} <= {high}"


def fmt_value(value: float, unit: str) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if unit == "pp":
        return f"{100 * value:+.2f} pp"
    if unit == "%":
        return f"{100 * value:.2f}%"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "count":
        return f"{value:.0f}"
    return f"{value:.3f}"


def fmt_interval(interval: Interval, unit: str) -> str:
    return (f"{fmt_value(interval.estimate, unit)} [{fmt_value(interval.low, unit)}, "
            f"{fmt_value(interval.high, unit)}]")


def compare(interval: Interval, region: Region) -> str:
    """The verdict of an interval against a region."""
    if region.contains(interval):
        return HOLDS
    if region.excludes(interval):
        return FAILS
    return INCONCLUSIVE


def judge_interval(claim: Claim, evidence: Mapping) -> Verdict:
    """The default: the evidence's interval against the claim's region."""
    interval = Interval.from_dict(evidence["interval"])
    return Verdict(compare(interval, claim.region), fmt_interval(interval, claim.unit), evidence.get("note", ""))


def judge_censored(claim: Claim, evidence: Mapping) -> Verdict:
    """Label noise: the loss is measured at the best k searched; where that best k is the deepest searched
    ('censored'), a deeper search could only raise the noisy accuracy, i.e. lower the loss. So a censored 'holds'
    stands, but a censored 'does not hold' or 'inconclusive' cannot be told apart from a search too shallow."""
    found = judge_interval(claim, evidence)
    if evidence.get("censored") and found.verdict != HOLDS:
        return Verdict(INCONCLUSIVE, found.ours, f"censored: the best k is the deepest searched "
                                                 f"(k = {evidence.get('k_searched')}); a deeper search could lower "
                                                 "the loss")
    return found


def judge_zero(claim: Claim, evidence: Mapping) -> Verdict:
    """A count that must be 0 (exactness by construction): no interval, the count decides."""
    count = int(evidence["count"])
    of = evidence.get("of")
    ours = f"{count:,}" + (f" of {int(of):,}" if of is not None else "")
    return Verdict(HOLDS if count == 0 else FAILS, ours, evidence.get("note", ""))


def judge_purge(claim: Claim, evidence: Mapping) -> Verdict:
    """The physical purge: no byte of a purged exemplar may be left (the certificate's checks), and its time per
    exemplar is judged like the deletion's."""
    if not evidence.get("certificate_passed", False):
        return Verdict(FAILS, evidence.get("ours", ""), "the purge certificate failed: "
                       + str(evidence.get("failed_checks", "see the unlearning section")))
    return judge_interval(claim, evidence)


def judge_tradeoff(claim: Claim, evidence: Mapping) -> Verdict:
    """Compute vs memory: the larger encoder must be better at equal memory (`gain`, larger - smaller on the same
    queries) and the smaller must catch up with more memory (`catch_up`: smaller at the larger memory - larger at
    the smaller memory, same queries). Holds when both intervals are above 0; does not hold when either is wholly
    below 0; inconclusive otherwise."""
    gain, catch_up = Interval.from_dict(evidence["gain"]), Interval.from_dict(evidence["catch_up"])
    above = Region(0.0, math.inf, strict=True)
    verdicts = compare(gain, above), compare(catch_up, above)
    verdict = (FAILS if FAILS in verdicts else HOLDS if verdicts == (HOLDS, HOLDS) else INCONCLUSIVE)
    ours = f"gain {fmt_interval(gain, 'pp')}; catch-up {fmt_interval(catch_up, 'pp')}"
    return Verdict(verdict, ours, evidence.get("note", ""))


PP = 0.01  # one percentage point as a fraction

CLAIMS: tuple[Claim, ...] = (
    Claim("rank-plateau", "RankVoting keeps its accuracy as k grows to 100",
          "aggregation section, top-1-vs-k figure (ImageNet, DinoV2)", "within ~0.3 pp of its best up to k = 100",
          "10,000 test queries, rank voting; accuracy at its best k minus at k = 100 (best k picked on the same "
          "queries), paired bootstrap", "loss from best k to k = 100", Region(-math.inf, 0.6 * PP),
          "2x the paper's ~0.3 pp (read off a figure with 1 pp gridlines, so reading error up to ~0.3 pp)", "pp"),
    Claim("plurality-falls", "Plurality voting loses accuracy as k grows to 100",
          "aggregation section, top-1-vs-k figure", "falls by several pp from its best to k = 100",
          "as above, plurality voting", "loss from best k to k = 100", Region(1.0 * PP, math.inf),
          "1 pp: the smallest fall distinguishable at the figure's resolution; the paper's fall is larger", "pp"),
    Claim("softmax-falls", "SoftmaxVoting (T = 0.07) loses accuracy as k grows to 100",
          "aggregation section, top-1-vs-k figure", "falls by several pp from its best to k = 100",
          "as above, softmax voting at T = 0.07", "loss from best k to k = 100", Region(1.0 * PP, math.inf),
          "as for plurality", "pp"),
    Claim("rank-beats-softmax", "RankVoting is more accurate than SoftmaxVoting",
          "aggregation section, top-1-vs-k figure", "RankVoting above SoftmaxVoting at every k shown",
          "rank minus softmax (T = 0.07) at k = 100, same queries, paired bootstrap", "rank - softmax at k = 100",
          Region(0.0, math.inf, strict=True), "the sign the paper shows; no size is claimed", "pp"),
    Claim("temperature", "SoftmaxVoting's temperature 0.07 sits on the flat part of its sweep",
          "appendix, aggregation hyper-parameter sweeps", "T = 0.07 used throughout as the flat optimum",
          "best of T in {0.01, 0.02, 0.05, 0.07, 0.1, 0.2, 0.5} minus T = 0.07, k = 10, paired bootstrap "
          "(the best T is picked on the same queries)", "best T - (T = 0.07)", Region(-math.inf, 0.3 * PP),
          "0.3 pp, the plateau width the paper's RankVoting curve shows (Fig. 3)", "pp"),
    Claim("sweep-regime", "RankVoting's offset has a flat regime: accuracy barely depends on it",
          "appendix, aggregation hyper-parameter sweeps", "flat over the offsets swept",
          "spread (max - min) of rank-voting accuracy at k = 10 over offsets {1, 2, 5, 10}, bootstrap over queries",
          "spread over offsets", Region(-math.inf, 0.6 * PP), "as for rank-plateau: 2x ~0.3 pp", "pp"),
    Claim("neighbour-index", "The i-th neighbour alone is less often right as i grows",
          "appendix, neighbour-index figure", "accuracy of the i-th neighbour falls with i",
          "label of neighbour 1 vs neighbour 100 as the prediction, paired bootstrap",
          "accuracy(1st) - accuracy(100th)", Region(1.0 * PP, math.inf),
          "1 pp, the smallest fall readable in the figure; the paper's fall is larger", "pp"),
    Claim("hit-rate", "The true label is almost always among the first 100 neighbours",
          "appendix, neighbour-index figure", "~98% at k = 100 (ImageNet, 1,000 classes)",
          "share of queries with the true label among the 100 nearest, bootstrap; 10 classes make this easier "
          "than 1,000", "hit rate at k = 100", Region(0.97, 1.0),
          "the paper's 98% minus 1 pp of reading error", "%"),
    Claim("linear-probe", "kNN voting trails a linear probe on the same embeddings by a few pp",
          "aggregation section, kNN vs linear-probe comparison (text)", "83.5% kNN vs 86.3% linear (2.8 pp, ImageNet, DinoV2)",
          "multinomial logistic regression on the 60,000 training embeddings minus rank voting at k = 10, "
          "same 10,000 queries, paired bootstrap", "linear - kNN", Region(0.0, 5.6 * PP, strict=True),
          "same sign as the paper and at most 2x its 2.8 pp gap", "pp"),
    Claim("scaling-form", "Error falls linearly in log10(log10 N): that form predicts larger memories",
          "Appendix F (scaling fit)", "log10(error) linear in log10(log10 N)",
          "fit both forms on memories of 10 to 20,000 exemplars (5 seeds each), predict log10(error) at 60,000; "
          "power-law prediction error minus the paper's form's, bootstrap over queries",
          "|power-law miss| - |paper-form miss| (log10 error)", Region(0.0, math.inf, strict=True),
          "the paper's form must predict the held-out largest memory better than the rival form (an exact power "
          "law fits both forms well in-sample, so in-sample R² cannot decide)", "log10"),
    Claim("new-classes-digits", "Adding new classes leaves old-class accuracy unchanged",
          "adding-data section, Table 1 (64 NINCO classes)", "old-class accuracy changes by 0.02-0.04 pp",
          "scikit-learn digits (10 classes, disjoint from clothing; half of each class added, 5 seeds) added to the "
          "60,000-exemplar memory; old-class accuracy after minus before, rank voting, k = 10, paired bootstrap "
          "(seed 0) and mean over seeds", "change in old-class accuracy", Region(-0.1 * PP, 0.1 * PP),
          "+-0.1 pp: 2.5x the paper's largest change (0.04 pp)", "pp"),
    Claim("new-classes-recognised", "Added classes are recognised at once, without training",
          "adding-data section, Table 1", "~87% top-1 on the 64 NINCO classes",
          "the other half of each digit class as queries, 5 seeds, rank voting, k = 10, t interval over seeds",
          "accuracy on the new classes", Region(0.82, 1.0),
          "the paper's 87% minus 5 pp (our choice: the paper gives one number; digits are not NINCO)", "%"),
    Claim("new-classes-overlapping", "Adding classes leaves old-class accuracy unchanged (held-out Fashion-MNIST "
          "classes, which overlap the old ones)",
          "adding-data section, Table 1", "0.02-0.04 pp",
          "shirt and sneaker held out of the memory, then added; old-class (8 classes) accuracy after minus before, "
          "rank voting, k = 10, paired bootstrap", "change in old-class accuracy", Region(-0.1 * PP, 0.1 * PP),
          "as for digits; NINCO is built to avoid overlap, these classes do not", "pp"),
    Claim("ood-digits", "New-class samples lie farther from their nearest neighbours (near OOD: digits)",
          "Appendix, Fig. 12 (mean distance to the 100 nearest)", "distance histograms visibly separated",
          "mean cosine distance to the 100 nearest as the score; 1,797 digits vs 10,000 Fashion-MNIST test queries; "
          "AUROC with a bootstrap interval", "AUROC", Region(0.76, 1.0),
          "we read Fig. 12 as two histograms at least one spread apart (d' >= 1): AUROC = Phi(d'/sqrt 2) >= 0.76",
          "auroc"),
    Claim("ood-photos", "Far-OOD photos lie farther from their nearest neighbours",
          "Appendix, Fig. 12", "distance histograms visibly separated",
          "as above with scikit-image's sample photos (few images: wide interval)", "AUROC", Region(0.76, 1.0),
          "as for digits", "auroc"),
    Claim("hard-pruning", "Hard pruning of unreliable exemplars raises accuracy",
          "memory-pruning section; notebook main_analysis_plots.ipynb, pruning cells", "v >= 128 skipped (~2% of ImageNet) gains",
          "v over the top-100 leave-one-out neighbours; the threshold that prunes ~2% here; rank voting, k = 10; "
          "pruned minus unpruned, paired bootstrap", "pruned - unpruned", Region(0.0, math.inf, strict=True),
          "the sign the paper reports; no size is claimed", "pp"),
    Claim("soft-pruning", "Soft pruning (weights x 1.75/(1 + v)) raises accuracy",
          "memory-pruning section, Fig. 5", "soft pruning corrects decisions (Fig. 5) and gains",
          "v over the top-10 leave-one-out neighbours; rank voting, k = 10; soft minus none, paired bootstrap",
          "soft - none", Region(0.0, math.inf, strict=True), "the sign the paper reports", "pp"),
    Claim("label-noise", "Accuracy is almost unchanged with up to ~60% of labels replaced by a random class",
          "removing-data section, label-noise figure", "almost unchanged up to ~60% noise (RankVoting, best k)",
          "60% of memory labels replaced by a random class (may be the true one), 5 seeds; rank voting at its best "
          "k up to 500; clean minus noisy, t interval over seeds", "loss at 60% noise", Region(-math.inf, 2.0 * PP),
          "2 pp: 'almost unchanged' read as within two of the figure's 1 pp gridlines", "pp"),
    Claim("taxonomy", "A class held out of memory is still placed in its coarse group",
          "adding-data section, taxonomy (held-out class) experiment", "held-out classes land in the right superclass",
          "each class whose group has another class held out in turn, others at 50 exemplars, k = 1, 5 seeds; "
          "group accuracy minus chance (the share of the remaining memory in that group); t interval over seeds",
          "group accuracy - chance", Region(0.0, math.inf, strict=True),
          "above what a random neighbour would give; singleton groups are left out (they score 0 by construction)",
          "pp"),
    Claim("calibration", "The share of neighbours that agree is a usable confidence",
          "interpretability section (decision mechanism)", "no number given",
          "plurality share of the 10 nearest as confidence; expected calibration error (10 bins), bootstrap",
          "expected calibration error", Region(0.0, 0.05),
          "5 pp: our choice; the paper gives no number", "%"),
    Claim("compute-vs-memory", "A smaller encoder with more memory matches a larger one with less",
          "adding-data section, compute-vs-memory figure", "the smaller model catches up with more memory",
          "EfficientNet-Lite0 vs Lite1 on 10,000 training / 2,000 test images: Lite1 - Lite0 at 5,000 (gain) and "
          "Lite0 at 10,000 - Lite1 at 5,000 (catch-up), rank voting, k = 10, paired bootstrap", "gain and catch-up",
          Region(0.0, math.inf, strict=True), "both above 0: the claim's premise and its conclusion", "pp"),
    Claim("delete-latency", "Deleting an exemplar (reversible: queries stop seeing it at once) takes < 20 ms",
          "removing-data section, unlearning", "< 20 ms per deletion",
          "200 single deletions from a 60,000-exemplar hnswlib memory; p95 per exemplar, bootstrap",
          "p95 deletion time", Region(0.0, 20.0), "the paper's 20 ms", "ms"),
    Claim("purge", "Physical purge: the bytes of deleted exemplars leave the disk",
          "removing-data section, unlearning", "< 20 ms per deletion (the paper does not purge files)",
          "the 200 deleted exemplars purged in one certified purge; time per exemplar (total / 200); the certificate "
          "must find no byte left", "purge time per exemplar", Region(0.0, 20.0),
          "the paper's 20 ms, applied to what leaves the disk", "ms"),
    Claim("retained-utility", "Unlearning leaves every other answer unchanged",
          "removing-data section, unlearning", "exact by construction",
          "queries whose answer changed although none of their neighbours was deleted (10,000 test queries)",
          "count", Region(0.0, 0.0), "must be 0", "count"),
    Claim("forgetting", "Deleted exemplars are never retrieved again",
          "removing-data section, unlearning", "exact by construction", "deleted ids among any test query's neighbours after deletion",
          "count", Region(0.0, 0.0), "must be 0", "count"),
    Claim("reranking", "A VLM shown 50 neighbours re-ranks them to higher accuracy",
          "interpretability section, VLM (Gemini) re-ranking", "83.5% -> 88.5% top-1 on ImageNet",
          "needs a reachable model (--rerank)", "re-ranked - kNN", Region(0.0, math.inf, strict=True),
          "the sign the paper reports", "pp"),
)

_JUDGES = {"label-noise": judge_censored, "retained-utility": judge_zero, "forgetting": judge_zero,
           "purge": judge_purge, "compute-vs-memory": judge_tradeoff}
CLAIMS = tuple(Claim(**{**c.__dict__, "judge": _JUDGES.get(c.id, judge_interval)}) for c in CLAIMS)
BY_ID = {claim.id: claim for claim in CLAIMS}

# Criteria changed after the results were seen: (claim, old criterion, new criterion, reason). Printed in the report.
CHANGES: tuple[tuple[str, str, str, str], ...] = ()


def verdicts(evidence: Mapping[str, Mapping]) -> dict[str, Verdict]:
    """claim id -> its verdict, for every registered claim (missing evidence: not comparable)."""
    return {claim.id: claim.verdict(evidence.get(claim.id)) for claim in CLAIMS}
