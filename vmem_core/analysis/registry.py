"""The experiments by name: how each one runs, reads as text and draws.

The CLI (`vmem eval --experiment`), the app's Evaluate page and `scripts/results.py` read this registry and nothing
else: an experiment is added by adding its `Experiment` to `_ENTRIES` below (its computation may sit in
`experiments.py` and its figure in `experiment_plots.py`, where plotly stays out of the CLI's imports).

Every experiment votes over one exact search of the memory (`ExperimentContext.cache`); each returns a JSON-ready dict,
the same dict `vmem eval --experiment NAME --json` prints, from which its text report and figures are drawn.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence

import numpy as np

from ..errors import VmemError
from ..voting import DEFAULT_RULE, RULES, VoteSettings
from . import experiments as ex
from .neighbor_cache import NeighborCache, build_cache, memory_arrays

if TYPE_CHECKING:
    from ..memory import VisualMemory

Progress = Callable[[int, int], None]


@dataclass
class ExperimentOptions:
    """Settings of the experiments; defaults follow the paper where it gives one.

    `vote` gives the fixed k reported beside best-over-k, the pruning threshold and top-N, and the rule parameters;
    every rule in `rules` is run (vote.rule and vote.pruning choose nothing here).
    """

    vote: VoteSettings = ex.FIXED_K_SETTINGS
    k_max: int = ex.DEFAULT_K_MAX
    rules: Sequence[str] = RULES
    sizes: Sequence[int] = ex.DEFAULT_SIZES
    seeds: Sequence[int] = (0, 1, 2)
    new_classes: Optional[Sequence[str]] = None  # default: the last label in sorted order
    noise: Sequence[float] = ex.DEFAULT_NOISE
    taxonomy: Optional[Path] = None
    held_out: Optional[str] = None  # taxonomy's held-out class; default: the last label
    added: Sequence[int] = ex.DEFAULT_ADDED
    ood_held_out: Optional[Sequence[str]] = None  # default: the same as new_classes
    ood_k: int = 1
    # the paper's protocols, run beside the project's own settings above
    paper_top_n: int = 100  # reliability v over the top-100 leave-one-out neighbours
    prune_thresholds: Sequence[float] = ex.DEFAULT_PRUNE_THRESHOLDS  # hard-pruning sweep (the paper skips v >= 128)
    taxonomy_per_class: int = 50  # every other class keeps 50 exemplars when a class is held out
    taxonomy_added: Sequence[int] = ex.PAPER_ADDED
    ood_ks: Sequence[int] = (1, 10, 100)  # OOD score: mean distance to the k nearest, for each k
    rank_offsets: Sequence[float] = ex.DEFAULT_RANK_OFFSETS  # the rules' parameters, swept in "accuracy"
    temperatures: Sequence[float] = ex.DEFAULT_TEMPERATURES


@dataclass
class ExperimentContext:
    """What an experiment runs on: the memory as arrays, each query's k_max nearest memory items, the options."""

    vectors: np.ndarray  # the memory's unit vectors
    labels: np.ndarray  # the memory's labels
    cache: NeighborCache  # each query's nearest memory items, found once
    options: ExperimentOptions
    ood_embeddings: Optional[np.ndarray] = None
    progress: Optional[Callable[[str, int, int], None]] = None

    def stage(self, name: str) -> Optional[Progress]:
        """A progress callback for one stage of an experiment."""
        return (lambda done, total: self.progress(name, done, total)) if self.progress else None

    @property
    def last_label(self) -> str:
        return sorted(set(self.labels.tolist()))[-1]

    @property
    def new_classes(self) -> list[str]:
        return list(self.options.new_classes or [self.last_label])


@dataclass(frozen=True)
class Experiment:
    """One experiment: `run` computes its JSON-ready result; `report` and `figures` draw that result (k: the fixed k
    of the run, options.vote.k)."""

    name: str
    title: str
    run: Callable[[ExperimentContext], dict]
    report: Callable[[Mapping, int], list[str]]
    figures: Callable[[Mapping, int], list]  # plotly figures
    requires: Mapping[str, str] = field(default_factory=dict)  # ExperimentOptions field -> what it must hold


def _plots():
    from . import experiment_plots  # plotly: loaded when a figure is drawn, not by the CLI's text report

    return experiment_plots


# --- 1. accuracy and hit rate vs k ----------------------------------------------------------------------------------
def _run_accuracy(context: ExperimentContext) -> dict:
    options = context.options
    return {**ex.accuracy_and_hit_rate(context.cache, options.rules, options.vote).to_dict(),
            "parameter_sweep": ex.rule_parameter_sweep(context.cache, options.vote, options.rank_offsets,
                                                       options.temperatures)}


def _report_accuracy(result: Mapping, k: int) -> list[str]:
    shown = [x for x in (1, 10, 100) if x <= len(result["hit_rate"])]
    lines = [f"{'rule':<10}" + "".join(f"{'k=' + str(x):>9}" for x in shown) + f"{'best-over-k':>20}"]
    for rule, curve in result["accuracy"].items():
        best = result["best_over_k"][rule]
        lines.append(f"{rule:<10}" + "".join(f"{curve[x - 1]:>9.4f}" for x in shown)
                     + f"{best['accuracy']:>11.4f} (k={best['k']})")
    lines.append(f"{'hit rate':<10}" + "".join(f"{result['hit_rate'][x - 1]:>9.4f}" for x in shown))
    for parameter, rows in result.get("parameter_sweep", {}).items():
        lines.append(f"{parameter}: " + ", ".join(
            f"{row['value']:g} -> {row['accuracy']:.4f} (best {row['best_over_k']['accuracy']:.4f} at "
            f"k={row['best_over_k']['k']})" for row in rows))
    return lines


# --- 2. memory size -------------------------------------------------------------------------------------------------
def _run_memory_size(context: ExperimentContext) -> dict:
    options = context.options
    frame = ex.memory_size_sweep(context.cache, options.sizes, options.seeds, options.rules, options.vote,
                                 context.stage("memory-size"))
    return {"k": options.vote.k, "rows": frame.to_dict("records"),
            "note": ex.memory_sizes(context.cache.memory_labels, options.sizes)[1],
            "fit": {rule: ex.fit_log_error(frame, rule).to_dict() for rule in frame["rule"].unique()},
            "fit_best_over_k": {rule: ex.fit_log_error(frame, rule, "best_accuracy").to_dict()
                                for rule in frame["rule"].unique()},
            "fit_loglog": {rule: ex.fit_log_error(frame, rule, loglog=True).to_dict()
                           for rule in frame["rule"].unique()}}


def _report_memory_size(result: Mapping, k: int) -> list[str]:
    import pandas as pd

    frame = pd.DataFrame(result["rows"])
    table = frame.groupby(["exemplars", "rule"])["accuracy"].agg(["mean", "std"]).unstack("rule")
    lines = [f"accuracy at k={result['k']} (mean and std over seeds) by memory size:", table.round(4).to_string()]
    if result.get("note"):
        lines.append(f"note: {result['note']}")
    for rule, fit in result["fit"].items():
        lines.append(_no_fit(rule, fit) or f"{rule}: log10(error) = {fit['intercept']:.3f} + {fit['slope']:.3f} "
                     f"log10(memory size) (R^2 {fit['r_squared']:.3f}, {fit['points']} sizes)")
    for rule, fit in result.get("fit_loglog", {}).items():
        lines.append(_no_fit(f"{rule} (paper's form)", fit) or f"{rule} (paper's form): log10(error) = "
                     f"{fit['intercept']:.3f} + {fit['slope']:.3f} log10(log10(memory size)) "
                     f"(R^2 {fit['r_squared']:.3f}, {fit['points']} sizes)")
    return lines


def _no_fit(name: str, fit: Mapping) -> str:
    """Why a fit has no line ("" when it has one): fewer than two sizes with a non-zero error, e.g. one --sizes."""
    if fit["slope"] is not None and math.isfinite(fit["slope"]):
        return ""
    return (f"{name}: no fit: it needs a non-zero error at 2 or more memory sizes, got {fit['points']} "
            "(pass several --sizes)")


# --- 3. new classes -------------------------------------------------------------------------------------------------
def _run_new_classes(context: ExperimentContext) -> dict:
    options = context.options
    return {**ex.new_classes(context.cache, context.new_classes, options.rules, options.vote).to_dict(),
            "each_class": ex.new_classes_each(context.cache, options.rules, options.vote)}


def _report_new_classes(result: Mapping, k: int) -> list[str]:
    lines = [f"new classes {', '.join(result['new_labels'])}; {result['old_queries']} old-class and "
             f"{result['new_queries']} new-class queries, k={result['k']}"]
    for rule in result["old_before"]:
        lines.append(f"  {rule:<10} old before {result['old_before'][rule]:.4f}  after {result['old_after'][rule]:.4f}"
                     f"  ({result['old_delta_pp'][rule]:+.2f} pp)  new {result['new_after'][rule]:.4f}")
    if result.get("each_class"):
        lines.append("each class in turn as the new one (rank voting if run, else the first rule):")
    for row in result.get("each_class", []):
        rule = "rank" if "rank" in row["old_delta_pp"] else next(iter(row["old_delta_pp"]))
        lines.append(f"  {row['new_labels'][0]:<14} old {row['old_delta_pp'][rule]:+.2f} pp  new "
                     f"{row['new_after'][rule]:.4f}")
    return lines


# --- 4. pruning -----------------------------------------------------------------------------------------------------
def _run_pruning(context: ExperimentContext) -> dict:
    options = context.options
    vote = options.vote
    depth = min(max(vote.top_n, options.paper_top_n), len(context.labels) - 1)
    loo = build_cache(context.vectors, context.labels, k=depth, progress=context.stage("leave-one-out"))
    reliability = ex.reliability_from_loo(loo, vote.top_n)
    paper_reliability = ex.reliability_from_loo(loo, options.paper_top_n)
    sweep = ex.pruning_threshold_sweep(context.cache, paper_reliability, options.prune_thresholds, options.rules, vote)
    return {**ex.pruning_comparison(context.cache, reliability, options.rules, vote).to_dict(vote.k),
            "paper": {"top_n": min(options.paper_top_n, depth), "k": vote.k, "paper_threshold": ex.PAPER_THRESHOLD,
                      "paper_fraction_pruned": ex.PAPER_FRACTION_PRUNED,
                      "matched_threshold": ex.matched_threshold(sweep), "sweep": sweep}}


def _report_pruning(result: Mapping, k: int) -> list[str]:
    lines = [f"hard pruning skips {result['pruned']} of {result['memory']} exemplars (v >= "
             f"{result['threshold']:g}); soft pruning down-weights {result['soft_weighted']}"]
    for mode, rules in result[f"accuracy_at_k{k}"].items():
        lines.append(f"  {mode:<5}" + "".join(
            f"  {rule} {value:.4f} (best {result['best_over_k'][mode][rule]['accuracy']:.4f})"
            for rule, value in rules.items()))
    paper = result.get("paper")
    if paper:
        lines.append(f"the paper's hard pruning (v over the top-{paper['top_n']} leave-one-out neighbours; if all of a "
                     f"query's k are pruned, none is), accuracy at k={paper['k']} by threshold:")
        for row in paper["sweep"]:
            threshold = row["threshold"] if row["threshold"] is not None else "inf"
            lines.append(f"  v >= {threshold:<6} prunes {row['pruned']:>7} ({100 * row['fraction_pruned']:6.2f}%)"
                         + "".join(f"  {rule} {value:.4f}" for rule, value in row["accuracy"].items()))
    return lines


# --- 5. label noise -------------------------------------------------------------------------------------------------
def _run_noise(context: ExperimentContext) -> dict:
    options = context.options
    frame = ex.label_noise(context.cache, options.noise, options.rules, options.vote)
    paper = ex.label_noise(context.cache, options.noise, options.rules, options.vote, any_class=True)
    return {"k": options.vote.k, "rows": frame.to_dict("records"), "random_class_rows": paper.to_dict("records")}


def _report_noise(result: Mapping, k: int) -> list[str]:
    import pandas as pd

    frame = pd.DataFrame(result["rows"])
    lines = [f"accuracy at k={result['k']} by fraction of memory labels flipped:",
             frame.pivot(index="noise", columns="rule", values="accuracy").round(4).to_string()]
    if result.get("random_class_rows"):
        paper = pd.DataFrame(result["random_class_rows"])
        lines += ["the paper's protocol (labels replaced by a random class, maybe the true one), best-over-k:",
                  paper.pivot(index="noise", columns="rule", values="best_accuracy").round(4).to_string()]
    return lines


# --- 6. taxonomy ----------------------------------------------------------------------------------------------------
def _run_taxonomy(context: ExperimentContext) -> dict:
    options = context.options
    if options.taxonomy is None:
        raise VmemError("the taxonomy experiment needs a mapping file (CSV: class,group,...)")
    taxonomy = ex.load_taxonomy(options.taxonomy)
    held_out = options.held_out or context.last_label
    # the held-out class is judged by its single nearest exemplar, by the default rule
    frame = ex.held_out_class_levels(context.cache, taxonomy, held_out, options.added, options.seeds,
                                     replace(options.vote, k=1, rule=DEFAULT_RULE))
    every = ex.taxonomy_every_class(context.cache, taxonomy, options.taxonomy_per_class, options.taxonomy_added,
                                    options.seeds, replace(options.vote, k=1, rule=DEFAULT_RULE))
    return {"every_class": {
                "others_per_class": options.taxonomy_per_class, "k": 1, "rule": DEFAULT_RULE,
                "held_out": sorted(every["held_out"].unique().tolist()),
                "added_k1": every.groupby(["added", "level"], sort=False)["accuracy"].mean().unstack()
                .reindex(columns=list(taxonomy.levels)).reset_index().to_dict("records"),
                "by_class": every.groupby(["held_out", "added", "level"], sort=False)["accuracy"].mean().unstack()
                .reindex(columns=list(taxonomy.levels)).reset_index().to_dict("records")},
            "k": options.vote.k, "levels": list(taxonomy.levels),
            "accuracy": ex.taxonomy_accuracy(context.cache, taxonomy, options.rules, options.vote),
            "held_out": held_out,
            "held_out_k1": frame.groupby(["added", "level"], sort=False)["accuracy"].mean()
            .unstack().reindex(columns=list(taxonomy.levels)).reset_index().to_dict("records")}


def _report_taxonomy(result: Mapping, k: int) -> list[str]:
    lines = [f"  {level:<12}" + "".join(f"  {rule} {value:.4f}" for rule, value in rules.items())
             for level, rules in result["accuracy"].items()]
    lines.append(f"held-out class {result['held_out']!r}, its queries at k=1 after adding n exemplars:")
    for row in result["held_out_k1"]:
        lines.append(f"  n={row['added']:<3}" + "".join(f"  {level} {row[level]:.4f}" for level in result["levels"]))
    every = result.get("every_class")
    if every:
        lines.append(f"the paper's protocol: each of {len(every['held_out'])} classes held out in turn, the others "
                     f"capped at {every['others_per_class']} exemplars, k=1, mean over classes and seeds:")
        for row in every["added_k1"]:
            lines.append(f"  n={row['added']:<3}" + "".join(f"  {level} {row[level]:.4f}"
                                                           for level in result["levels"]))
    return lines


# --- 7. out of distribution -----------------------------------------------------------------------------------------
_OOD_SETS = {"held_out_classes": "held-out classes", "images": "other images"}


def _run_ood(context: ExperimentContext) -> dict:
    options = context.options
    result = ex.ood_auroc(context.cache, list(options.ood_held_out or context.new_classes), options.ood_k)
    held = list(options.ood_held_out or context.new_classes)
    ks = sorted({min(int(k), context.cache.depth) for k in options.ood_ks if int(k) >= 1})
    out = {"held_out_classes": {**result.to_dict(), "by_k": [ex.ood_auroc(context.cache, held, k).summary()
                                                             for k in ks]}}
    if context.ood_embeddings is not None and len(context.ood_embeddings):
        images = ex.ood_auroc_of_images(context.cache, context.ood_embeddings, options.ood_k).to_dict()
        out["images"] = {**images, "by_k": [ex.ood_auroc_of_images(context.cache, context.ood_embeddings, k).summary()
                                            for k in ks]}
    return out


def _report_ood(result: Mapping, k: int) -> list[str]:
    return [f"  {what}: AUROC {r['auroc']:.4f} ({r['out_queries']} out vs {r['in_queries']} in, mean "
            f"distance to {r['k']} nearest; medians {r['in_score_median']:.4f} in, "
            f"{r['out_score_median']:.4f} out)" + "".join(f"; k={row['k']} AUROC {row['auroc']:.4f}"
                                                          for row in r.get("by_k", []))
            for what, r in result.items()]


_ENTRIES = (
    Experiment("accuracy", "Accuracy and hit rate vs k, every rule", _run_accuracy, _report_accuracy,
               lambda r, k: [_plots().accuracy_and_hit_rate_figure(r)]),
    Experiment("memory-size", "Accuracy vs memory size, over seeds, with a log-log fit", _run_memory_size,
               _report_memory_size, lambda r, k: [_plots().memory_size_error_figure(r)]),
    Experiment("new-classes", "New classes without forgetting", _run_new_classes, _report_new_classes,
               lambda r, k: [_plots().new_classes_figure(r)]),
    Experiment("pruning", "Hard and soft pruning vs none", _run_pruning, _report_pruning,
               lambda r, k: [_plots().pruning_figure(r, k)]
               + ([_plots().pruning_sweep_figure(r)] if "paper" in r else [])),
    Experiment("noise", "Label noise", _run_noise, _report_noise, lambda r, k: [_plots().noise_figure(r)]),
    Experiment("taxonomy", "Taxonomy levels, and a held-out class added back at k=1", _run_taxonomy,
               _report_taxonomy, lambda r, k: [_plots().taxonomy_figure(r)]
               + ([_plots().taxonomy_every_class_figure(r)] if "every_class" in r else []),
               requires={"taxonomy": "FILE (CSV: class,group,... one row per label)"}),
    Experiment("ood", "Out of distribution: AUROC of the distance to the nearest exemplars", _run_ood, _report_ood,
               lambda r, k: [_plots().ood_figure(v, _OOD_SETS[key]) for key, v in r.items()]),
)
REGISTRY: dict[str, Experiment] = {entry.name: entry for entry in _ENTRIES}
EXPERIMENTS = tuple(REGISTRY)  # the names, e.g. for the CLI's choices


def check_names(names: Sequence[str]) -> list[str]:
    """The names, once each, in the order given; an unknown one raises VmemError naming the accepted ones."""
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise VmemError(f"unknown experiment(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(REGISTRY)}")
    return list(dict.fromkeys(names))


def run_experiments_on_arrays(
    vectors: np.ndarray,
    labels: Sequence[str],
    query_embeddings: np.ndarray,
    true_labels: Sequence[str],
    experiments: Optional[Sequence[str]] = None,
    options: Optional[ExperimentOptions] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    ood_embeddings: Optional[np.ndarray] = None,
) -> dict[str, dict]:
    """Run the named experiments over one exact search of a memory given as unit vectors and labels.

    Args:
        experiments: names in REGISTRY (default: all of them).
        progress: called as progress(stage, done, total).
        ood_embeddings: extra out-of-distribution images (e.g. photos) scored against the queries in "ood".

    Returns:
        experiment name -> JSON-ready dict (see each function in `vmem_core.analysis.experiments`).
    """
    labels = np.asarray(list(labels), dtype=object)
    names = check_names(list(REGISTRY) if experiments is None else experiments)
    options = options or ExperimentOptions()
    if len(set(labels.tolist())) < 2:
        raise VmemError("the experiments need a memory with at least two labels")
    searched = (lambda done, total: progress("search", done, total)) if progress else None
    cache = build_cache(vectors, labels, query_embeddings, true_labels, k=options.k_max, progress=searched)
    context = ExperimentContext(vectors, labels, cache, options, ood_embeddings, progress)
    return {name: REGISTRY[name].run(context) for name in names}


def run_experiments(
    memory: VisualMemory,
    query_embeddings: np.ndarray,
    true_labels: Sequence[str],
    experiments: Optional[Sequence[str]] = None,
    options: Optional[ExperimentOptions] = None,
    progress: Optional[Callable[[str, int, int], None]] = None,
    ood_embeddings: Optional[np.ndarray] = None,
) -> dict[str, dict]:
    """`run_experiments_on_arrays` over the memory's live exemplars."""
    _, vectors, labels = memory_arrays(memory)
    return run_experiments_on_arrays(vectors, labels, query_embeddings, true_labels, experiments, options, progress,
                                     ood_embeddings)


def text_report(results: Mapping[str, Mapping], k: int) -> str:
    """Every result as the CLI prints it: a `== name ==` heading, then the experiment's own report."""
    return "".join(f"\n== {name} ==\n" + "\n".join(REGISTRY[name].report(result, k)) + "\n"
                   for name, result in results.items())


def figures(results: Mapping[str, Mapping], k: int) -> list[tuple[str, object]]:
    """(experiment name, plotly figure) for every result, in the order of `results`."""
    return [(name, figure) for name, result in results.items() for figure in REGISTRY[name].figures(result, k)]
