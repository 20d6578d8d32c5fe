"""The command line's re-ranking and text-query parts: options, the cost confirmation, and what they print.

Kept apart from cli.py so that the core commands read in one screen; cli.py hands over where these options are set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from .common import UsageError, sample_note, sample_summary, vote_settings

ASK_ABOVE_CALLS = 1  # one call for one image is what `classify --rerank` was asked for; more are confirmed first


def add_rerank_options(parser, batch: bool) -> None:
    from ..rerank import SPEC_HELP
    from ..rerank.pipeline import DEFAULT_SHOWN

    group = parser.add_argument_group("re-ranking by a vision-language model")
    group.add_argument("--rerank", metavar="SPEC", help=f"ask a model for the label after the vote: {SPEC_HELP}")
    group.add_argument("--rerank-shown", type=int, default=DEFAULT_SHOWN, metavar="N",
                       help=f"nearest exemplars shown to the model with their labels (default {DEFAULT_SHOWN}, as the "
                            "paper; 0: the query alone, with every class of the memory listed)")
    group.add_argument("--rerank-distances", action=argparse.BooleanOptionalAction, default=True,
                       help="write each neighbour's distance beside its label (vmem's addition; the paper's prompt "
                            "shows labels only)")
    group.add_argument("--rerank-restrict", action=argparse.BooleanOptionalAction, default=True,
                       help="list the shown neighbours' labels and ask for one of them (vmem's addition; the paper's "
                            "prompt asks for the label without a list, and the answer is read against every class)")
    group.add_argument("--allow-new-label", action="store_true",
                       help="accept an answer that is not among the shown labels as a new label")
    group.add_argument("--synonyms", metavar="JSON", help="file mapping a label to other words the model may use "
                                                           'for it: {"t-shirt/top": ["t-shirt", "top"]}')
    group.add_argument("--rerank-timeout", type=float, default=60.0, metavar="S", help="seconds per answer")
    group.add_argument("--price-per-mtok", type=float, default=None, metavar="USD",
                       help="US dollars per million input tokens, for the cost estimate")
    group.add_argument("--yes", action="store_true", help="start the model calls without asking")
    if batch:
        group.add_argument("--rerank-ablations", action="store_true",
                           help="also evaluate the paper's configurations on the same queries: its prompt (labels "
                                "only), each of vmem's additions alone and both, and the query alone (0 shown)")
        group.add_argument("--limit", type=int, default=None, metavar="N",
                           help="evaluate a random sample of N queries (seeded by --seed), e.g. to bound cost")
        group.add_argument("--seed", type=int, default=0)


def _synonyms(path: Optional[str]) -> dict:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"--synonyms {path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(w, str) for w in v)
                                             for v in data.values()):
        raise UsageError(f"--synonyms {path}: expected an object of label -> list of words, e.g. "
                         '{"t-shirt/top": ["t-shirt", "top"]}')
    return data


def prompt_switches(args):
    """The prompt's switches as the options set them (vmem's prompt unless switched off)."""
    from ..rerank.prompt import PromptSwitches

    return PromptSwitches(show_distances=args.rerank_distances, restrict_to_neighbor_labels=args.rerank_restrict)


def reranker_from_args(args):
    from ..rerank import load_reranker

    if args.rerank_timeout <= 0:
        raise UsageError(f"--rerank-timeout must be positive, got {args.rerank_timeout}")
    if args.price_per_mtok is not None and not args.price_per_mtok >= 0:  # a negative price hides the cost
        raise UsageError(f"--price-per-mtok must be a price in US dollars, 0 or more, got {args.price_per_mtok}")
    return load_reranker(args.rerank, timeout=args.rerank_timeout, synonyms=_synonyms(args.synonyms),
                         price_per_million_tokens=args.price_per_mtok)


def confirm(plan, model: str, assume_yes: bool, ask_above: int = 0) -> bool:
    """Show the plan on stderr; ask on a terminal, or require --yes elsewhere, before paid calls start."""
    print(plan.describe(model), file=sys.stderr)
    if plan.calls <= ask_above or assume_yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{plan.calls} model call(s) would start; add --yes to confirm (nothing was sent)")
    print("start? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        print("cancelled: no call was made", file=sys.stderr)
        return False
    return True


def query_extras(args, memory, loaded, embeddings, progress) -> list[dict]:
    """Per query, what `classify --rerank` / `--zero-shot` add: {"rerank": ...} and/or {"zero_shot": ...}."""
    extras: list[dict] = [{} for _ in loaded]
    if getattr(args, "zero_shot", False):
        from ..analysis.text_query import zero_shot_scores

        for extra, scores in zip(extras, zero_shot_scores(memory, embeddings)):
            extra["zero_shot"] = scores
    if getattr(args, "rerank", None):
        from ..rerank.pipeline import make_requests, plan_batch, rerank_all, with_cache

        reranker = with_cache(reranker_from_args(args), memory)
        requests = make_requests(memory, [i.image for i in loaded], [i.sha256 for i in loaded], embeddings,
                                 args.rerank_shown, vote_settings(args), args.allow_new_label, prompt_switches(args))
        if not confirm(plan_batch(reranker, requests), reranker.name, args.yes, ASK_ABOVE_CALLS):
            raise UsageError("cancelled before any model call")
        for extra, result in zip(extras, rerank_all(reranker, requests, progress)):
            extra["rerank"] = result.to_dict()
    return extras


def print_extras(extra: dict) -> None:
    if "rerank" in extra:
        r = extra["rerank"]
        source = " (cached)" if r["cached"] else ""
        if r["label"] is not None:
            print(f"    re-ranked by {r['model']}{source}: {r['label']}  [{r['status']}, matched {r['matched_by']}; "
                  f"raw answer {r['raw'][:80]!r}]")
        else:
            print(f"    re-ranked by {r['model']}{source}: no label ({r['status']}: {r['detail']})"
                  + (f"; raw answer {r['raw'][:80]!r}" if r["raw"] else ""))
    if "zero_shot" in extra:
        top = list(extra["zero_shot"].items())[:3]
        print("    zero-shot from label names: " + ", ".join(f"{label} {p:.2f}" for label, p in top))


def cmd_eval_rerank(args, memory, progress_bar) -> dict:
    """kNN (fixed k and best-over-k) and re-ranked accuracy on the same (optionally sampled) queries, for the
    configuration the options give and, with --rerank-ablations, the paper's configurations; returns the JSON payload
    ("rerank": the options' configuration; "rerank_study": every configuration, with the kNN baselines)."""
    from ..analysis.evaluate import evaluate_embeddings
    from ..ingest.datasets import scan_dataset
    from ..rerank.evaluation import RerankConfiguration, evaluate_configurations, paper_configurations
    from ..rerank.pipeline import DEFAULT_SHOWN, load_labelled, sample_items

    reranker = reranker_from_args(args)  # before any encoding: a missing key is reported at once
    given = RerankConfiguration("as given by the options", args.rerank_shown, prompt_switches(args))
    configurations = [given, *(paper_configurations(args.rerank_shown or DEFAULT_SHOWN)
                               if args.rerank_ablations else ())]
    every = scan_dataset(Path(args.queries))
    items = sample_items(every, args.limit, args.seed)
    loaded, truths, rejected = load_labelled(items)
    embeddings = memory.encoder.encode([i.image for i in loaded], progress=progress_bar("encode", not args.json))
    knn = evaluate_embeddings(memory, embeddings, truths, args.k_max, settings=vote_settings(args))
    knn.rejected = rejected
    study = evaluate_configurations(memory, reranker, [i.image for i in loaded], [i.sha256 for i in loaded],
                                    [i.source for i in loaded], truths, embeddings, configurations,
                                    vote_settings(args), args.k_max, args.k, args.allow_new_label,
                                    confirm=lambda plan: confirm(plan, reranker.name, args.yes),
                                    progress=progress_bar("ask the model", not args.json))
    if study is None:
        raise UsageError("cancelled before any model call")
    evaluation = study.evaluations[0]
    payload = {**knn.to_dict(), "sample": sample_summary(len(items), len(every), args.seed),
               "rerank": evaluation.to_dict(), "rerank_study": study.to_dict()}
    if args.json:
        return payload
    shown = (f"the model is shown the {evaluation.k} nearest exemplars with their labels" if evaluation.k else
             "the model is shown the query alone, with every class listed")
    print(f"{len(truths)} queries{sample_note(payload['sample'])}; {shown}")
    rows = [(f"kNN vote ({args.voting}, k={evaluation.k})", evaluation.knn_accuracy, "")] if evaluation.k else []
    rows.append((f"re-ranked by {evaluation.model}", evaluation.reranked_accuracy, ""))
    best = knn.best().get(args.voting)
    if best:
        rows.append((f"kNN best-over-k ({args.voting}, k={best['k']})", best["accuracy"],
                     "  (optimistic: k chosen on these queries)"))
    width = max(len(name) for name, _, _ in rows) + 2
    print(f"{'':<{width}}{'accuracy':>9}")
    for name, accuracy, note in rows:
        print(f"{name:<{width}}{accuracy:>9.3f}{note}")
    statuses = evaluation.statuses()
    print("model answers: " + ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in sorted(statuses.items()))
          + f"; {payload['rerank']['calls_made']} call(s) made, the rest from the cache")
    if len(study.evaluations) > 1:
        print_study(study)
    for row in payload["rerank"]["per_query"]:
        if row["status"] not in ("candidate", "new"):
            print(f"    {row['image']}: {row['status']}: {row['detail']}", file=sys.stderr)
    return payload


def print_study(study) -> None:
    """The configurations side by side, under the kNN baselines."""
    print(f"\nevery configuration, on the same {study.queries} queries:")
    rows = study.rows()
    width = max(len(row["what"]) for row in rows) + 2
    print(f"{'':<{width}}{'accuracy':>9}  {'answered':>8}  without a label")
    for row in rows:
        missing = ", ".join(f"{n} {status.replace('_', ' ')}" for status, n in sorted(row.get("without_label",
                                                                                               {}).items()))
        answered = f"{row['answered']:>8}" if "answered" in row else " " * 8
        print(f"{row['what']:<{width}}{row['accuracy']:>9.3f}  {answered}  {missing}")


def cmd_search_text(args, memory) -> int:
    from ..analysis.text_query import search_text, text_unsupported_reason

    reason = text_unsupported_reason(memory)
    if reason:
        raise UsageError(f"cannot search {args.memory} by text: {reason}")
    hits = search_text(memory, args.text, args.k)
    if args.json:
        json.dump({"text": args.text, "hits": [hit.__dict__ for hit in hits]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"exemplars nearest to {args.text!r}:")
    for hit in hits:
        print(f"    #{hit.rank:<3} id {hit.id:<7} {hit.label:<16} distance {hit.distance:.4f}")
    return 0
