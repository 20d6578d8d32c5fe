"""The `vmem` command line: everything the library does, with one-line errors and progress bars."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

from .errors import EncoderMismatchError, MemoryLockedError, VmemError

EXIT_ERROR = 2
REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO_ROOT / "data" / "fashion-mnist"


class UsageError(VmemError):
    pass


def _progress_bar(description: str, enabled: bool = True):
    """A tqdm bar on stderr, as a progress(done, total) callback; stdout stays clean for --json."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from .host import serving_a_client

            bar = tqdm(total=total, desc=description, unit="img", file=sys.stderr,
                       disable=not enabled or serving_a_client(), leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _expand_images(paths: Sequence[str]) -> list[Path]:
    """Files as given; directories expanded to the images inside them (recursively, sorted)."""
    from .images import is_image_path

    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p))
            if not found:
                raise UsageError(f"{path}: directory holds no images (png, jpg, gif, bmp, tiff, webp)")
            out.extend(found)
        else:
            out.append(path)
    return out


def _exemplar_id(text: str) -> int:
    """An exemplar id as argparse type: a non-negative integer that fits the database's BIGINT."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an exemplar id (a whole number)") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text} is not an exemplar id (ids are 0 .. 2^63-1)")
    return value


def _print_json(payload) -> None:
    json.dump(payload, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# Memories this process holds and serves to CLI commands from other processes (see vmem_core.host): resolved path
# -> the open VisualMemory. Commands run for a client borrow the handle instead of opening the file again.
_HOSTED: dict = {}


class _Borrowed:
    """A hosted memory lent to one command: changes are named after the CLI, and the end of the command leaves
    the memory open for its holder."""

    def __init__(self, memory) -> None:
        from .audit import default_actor

        self.memory = memory
        self._acting = memory.acting_as(default_actor("cli through app"))

    def __enter__(self):
        self._acting.__enter__()
        return self.memory

    def __exit__(self, *exc) -> None:
        self._acting.__exit__(*exc)


def _hosted(path) -> Optional[object]:
    if not isinstance(path, (str, os.PathLike)) or not _HOSTED:
        return None
    for held_path, memory in list(_HOSTED.items()):
        try:
            if os.path.samefile(held_path, path):
                return memory
        except OSError:
            continue
    return None


def _open(args, encoder: Optional[str] = None, create: bool = False):
    from .audit import default_actor
    from .memory import VisualMemory

    encoder = encoder or getattr(args, "encoder", None)
    held = _hosted(args.memory)
    if held is not None:
        if encoder is not None and encoder != held.config["encoder"]["name"]:
            raise EncoderMismatchError(f"memory {args.memory} was built with encoder "
                                       f"{held.config['encoder']['name']!r}; it cannot be used with {encoder!r}")
        if create:
            _check_index_params(args, held)
        return _Borrowed(held)
    index_uri = getattr(args, "index_uri", None)
    if create:
        memory = VisualMemory.open_or_create(args.memory, encoder=encoder, backend=getattr(args, "backend", "hnswlib"),
                                             index_uri=index_uri, index_params=_index_params(args))
        try:
            _check_index_params(args, memory)
        except UsageError:
            memory.close()
            raise
    else:
        memory = VisualMemory.open(args.memory, encoder=encoder, index_uri=index_uri)
    memory.actor = default_actor("cli")
    return memory


_INDEX_OPTIONS = {"M": "--index-m", "ef_construction": "--index-ef-construction", "ef_search": "--index-ef"}


def _index_params(args):
    """The index parameters a new memory gets: IndexParams' defaults, with the --index-* options given."""
    from dataclasses import replace

    from .index import IndexParams

    given = {field: getattr(args, field) for field in _INDEX_OPTIONS if getattr(args, field, None) is not None}
    for field, value in given.items():
        if value < 1:
            raise UsageError(f"{_INDEX_OPTIONS[field]} {value}: must be a positive integer")
    return replace(IndexParams(), **given)


def _check_index_params(args, memory) -> None:
    """An existing memory keeps the graph it was built with: refuse --index-* values that differ from it."""
    built = memory.index_params
    differing = [f"{option} {getattr(args, field)} (this memory has {getattr(built, field)})"
                 for field, option in _INDEX_OPTIONS.items()
                 if getattr(args, field, None) is not None and getattr(args, field) != getattr(built, field)]
    if differing:
        raise UsageError(f"memory {args.memory} already exists and its index graph is fixed: {'; '.join(differing)}. "
                         "Leave the options out, or build a new memory; the search beam alone changes with "
                         f"`vmem tune {args.memory} --index-ef N`")


def host_memory(memory):
    """Serve CLI commands on `memory` (held open by this process, e.g. the app) to other processes; returns the
    vmem_core.host.Host."""
    from .host import Host

    _HOSTED[str(Path(memory.path).resolve())] = memory
    return Host(memory.path, run_for_client)


# commands a process holding the memory can run for the CLI (app and demo start processes of their own)
_HOSTABLE = ("build", "add", "delete", "restore", "purge", "audit", "classify", "eval", "attribute", "search-text",
             "stats", "tune")
_PATH_ARGUMENTS = ("memory", "data", "queries", "synonyms", "taxonomy", "ood_images")


def _memory_argument(args) -> Optional[str]:
    if args.command == "audit":
        return args.words[-1] if args.words else None
    return getattr(args, "memory", None)


def _client_request(args) -> dict:
    """The parsed command as JSON, paths made absolute (the holder has another working directory)."""
    values = {key: value for key, value in vars(args).items() if key != "func"}
    for key in _PATH_ARGUMENTS:
        if isinstance(values.get(key), (str, Path)):  # --taxonomy is parsed as a Path, which JSON cannot carry
            values[key] = str(Path(values[key]).resolve())
    if isinstance(values.get("images"), list):
        values["images"] = [str(Path(p).resolve()) for p in values["images"]]
    if args.command == "audit" and values["words"]:
        values["words"] = values["words"][:-1] + [str(Path(values["words"][-1]).resolve())]
    return values


def _run_in_holder(args, locked: MemoryLockedError) -> int:
    """Run the command in the process that holds the memory open, if it serves commands; else re-raise."""
    from .host import find_host, send, serving_a_client

    memory = _memory_argument(args)
    if serving_a_client() or args.command not in _HOSTABLE or not memory:
        raise locked
    address = find_host(Path(memory))
    if address is None:
        raise locked
    print(f"vmem: {memory} is open in the vmem app (pid {address.pid}); running the command there", file=sys.stderr)
    reply = send(address, _client_request(args))
    sys.stdout.write(reply["stdout"])
    sys.stderr.write(reply["stderr"])
    return int(reply["status"])


def run_for_client(request: dict) -> int:
    """Run a command sent by `vmem` in another process on a memory this process holds; returns its exit status."""
    command = request.get("command")
    if command not in _HOSTABLE:
        print(f"vmem: error: {command!r} cannot be run in the app; accepted: {', '.join(_HOSTABLE)}",
              file=sys.stderr)
        return EXIT_ERROR
    args = argparse.Namespace(**request, func=globals()[f"cmd_{command.replace('-', '_')}"])
    if _hosted(_memory_argument(args)) is None:
        print(f"vmem: error: {_memory_argument(args)} is not the memory this app holds", file=sys.stderr)
        return EXIT_ERROR
    return _execute(args)


# --- commands -------------------------------------------------------------------------------------------------------
def cmd_build(args) -> int:
    if args.engine == "local" and (args.ray_address or args.ray_cpus):
        raise UsageError("--ray-address and --ray-cpus go with --engine ray")
    with _open(args, create=True) as memory:
        progress = _progress_bar("build", not args.json)
        if args.engine == "ray":
            try:
                from .ray_build import build_with_ray
            except ImportError as exc:
                raise UsageError(f"--engine ray needs Ray: pip install -r requirements-scale.txt ({exc})") from None
            report = build_with_ray(memory, args.data, address=args.ray_address, num_cpus=args.ray_cpus,
                                    progress=progress, strict=args.strict)
        else:
            report = memory.build(args.data, progress=progress, strict=args.strict)
        stats = memory.stats()
    if args.json:
        _print_json({"added": report.added, "skipped_existing": report.skipped_existing,
                     "rejected": [{"path": p, "reason": r} for p, r in report.rejected],
                     "exemplars": stats["exemplars"], "labels": stats["labels"]})
    else:
        print(f"added {report.added} exemplar(s) to {args.memory} ({stats['exemplars']} live, "
              f"{stats['classes']} classes); {report.skipped_existing} already present")
        for path, reason in report.rejected:
            print(f"skipped unreadable image: {reason}", file=sys.stderr)
    return 0


def cmd_migrate(args) -> int:
    import time

    start = time.perf_counter()
    with _open(args) as memory:
        moved = memory.move_index(args.to, index_uri=args.target_uri)
        live = len(memory)
    seconds = time.perf_counter() - start
    if args.json:
        _print_json({**moved, "exemplars": live, "seconds": round(seconds, 3)})
    else:
        print(f"moved the index of {args.memory} from {moved['from']['name']} ({moved['from']['location']}) to "
              f"{moved['to']['name']} ({moved['to']['location']}): {live} live exemplars, {seconds:.1f} s; "
              "the old index was removed")
    return 0


def cmd_add(args) -> int:
    with _open(args) as memory:
        ids = memory.add(_expand_images(args.images), args.label, progress=_progress_bar("encode", not args.json))
    if args.json:
        _print_json({"ids": ids, "label": args.label})
    else:
        print(f"added {len(ids)} exemplar(s) labelled {args.label!r}: ids {', '.join(map(str, ids))}")
    return 0


def cmd_delete(args) -> int:
    with _open(args) as memory:
        memory.delete(args.ids)
        duplicates = memory.near_duplicates_of(args.ids, args.duplicate_distance)
    print(f"deleted {len(args.ids)} exemplar(s) (tombstoned: excluded from queries; `vmem restore` undoes it, "
          "`vmem purge` removes them for good)")
    for exemplar_id, close in duplicates.items():
        listed = ", ".join(f"{other} (distance {d:.4f})" for other, d in close)
        print(f"warning: exemplar {exemplar_id} has near-duplicates still in memory: {listed}; they keep nearly the "
              f"same influence (delete them too: vmem delete {args.memory} {' '.join(str(o) for o, _ in close)})",
              file=sys.stderr)
    return 0


def cmd_purge(args) -> int:
    from .unlearn import purge

    if not args.ids and not args.all:
        raise UsageError("give exemplar ids to purge, or --all for every tombstoned exemplar")
    if args.ids and args.all:
        raise UsageError("give either exemplar ids or --all, not both")
    with _open(args) as memory:
        certificate = purge(memory, None if args.all else args.ids)
    if args.json:
        _print_json(certificate.to_dict())
    else:
        print(certificate.explain())
    return 0 if certificate.passed else 1


def cmd_audit(args) -> int:
    words = list(args.words)
    verify_mode = words[:1] == ["verify"]
    if verify_mode:
        words = words[1:]
    if len(words) != 1:
        raise UsageError("usage: vmem audit MEM | vmem audit verify MEM")
    args.memory = words[0]
    with _open(args) as memory:
        entries = memory.audit_log()
        result = memory.verify_audit()
    if verify_mode:
        if args.json:
            _print_json(result.to_dict())
        else:
            print(("audit log intact: " if result.ok else "audit log BROKEN: ") + result.reason)
        return 0 if result.ok else 1
    if args.json:
        _print_json([{**entry.__dict__, "details": entry.payload()} for entry in entries])
        return 0
    for entry in entries[-args.limit:]:
        print(f"#{entry.seq:<5} {entry.at}  {entry.actor}  {entry.action:<8} {entry.details}")
    return 0


def cmd_restore(args) -> int:
    with _open(args) as memory:
        memory.restore(args.ids)
    print(f"restored {len(args.ids)} exemplar(s)")
    return 0


def cmd_classify(args) -> int:
    from .ood import judge

    from .cli_rerank import print_extras, query_extras

    with _open(args) as memory:
        images = _expand_images(args.images)
        loaded = memory.load_images(images)
        embeddings = memory.encoder.encode([item.image for item in loaded])
        results = memory.classify_embeddings(embeddings, args.k, args.voting, args.pruning, args.threshold,
                                             names=[str(p) for p in images], top_n=args.top_n)
        extras = query_extras(args, memory, loaded, embeddings, _progress_bar("ask the model", not args.json))
        # the OOD threshold needs a leave-one-out pass over the memory: only the text output shows it
        verdicts = [] if args.json else [judge(memory, r.neighbors[0].distance) if r.neighbors else None
                                         for r in results]
    if args.json:
        _print_json([{**r.to_dict(), **extra} for r, extra in zip(results, extras)])
        return 0
    for result, verdict, extra in zip(results, verdicts, extras):
        total = sum(result.scores.values()) or 1.0
        share = result.scores.get(result.label, 0.0) / total
        print(f"{result.image}: {result.label}  ({share:.0%} of the vote, k={len(result.neighbors)}, {args.voting})")
        if verdict is not None and verdict.is_ood:
            print(f"    out of distribution? {verdict.explain()}")
        print_extras(extra)
        for n in result.neighbors[: args.show]:
            print(f"    #{n.rank:<3} id {n.id:<7} {n.label:<16} distance {n.distance:.4f}  weight {n.weight:.4f}")
    return 0


def _experiment_options(args):
    from .evaluate import ExperimentOptions

    return ExperimentOptions(
        k=args.k, k_max=args.k_max, sizes=args.sizes, seeds=list(range(args.seeds)), new_classes=args.new_classes,
        threshold=args.threshold, top_n=args.top_n, noise=args.noise, taxonomy=args.taxonomy,
        held_out=args.held_out, added=args.added, ood_held_out=args.ood_held_out,
    )


def _print_experiments(results: dict, k: int) -> None:
    for name, result in results.items():
        print(f"\n== {name} ==")
        if name == "accuracy":
            shown = [x for x in (1, 10, 100) if x <= len(result["hit_rate"])]
            print(f"{'rule':<10}" + "".join(f"{'k=' + str(x):>9}" for x in shown) + f"{'best-over-k':>20}")
            for rule, curve in result["accuracy"].items():
                best = result["best_over_k"][rule]
                print(f"{rule:<10}" + "".join(f"{curve[x - 1]:>9.4f}" for x in shown)
                      + f"{best['accuracy']:>11.4f} (k={best['k']})")
            print(f"{'hit rate':<10}" + "".join(f"{result['hit_rate'][x - 1]:>9.4f}" for x in shown))
        elif name == "memory-size":
            import pandas as pd

            frame = pd.DataFrame(result["rows"])
            table = frame.groupby(["exemplars", "rule"])["accuracy"].agg(["mean", "std"]).unstack("rule")
            print(f"accuracy at k={result['k']} (mean and std over seeds) by memory size:")
            print(table.round(4).to_string())
            for rule, fit in result["fit"].items():
                print(f"{rule}: log10(error) = {fit['intercept']:.3f} + {fit['slope']:.3f} log10(memory size) "
                      f"(R^2 {fit['r_squared']:.3f}, {fit['points']} sizes)")
        elif name == "new-classes":
            print(f"new classes {', '.join(result['new_labels'])}; {result['old_queries']} old-class and "
                  f"{result['new_queries']} new-class queries, k={result['k']}")
            for rule in result["old_before"]:
                print(f"  {rule:<10} old before {result['old_before'][rule]:.4f}  after {result['old_after'][rule]:.4f}"
                      f"  ({result['old_delta_pp'][rule]:+.2f} pp)  new {result['new_after'][rule]:.4f}")
        elif name == "pruning":
            print(f"hard pruning skips {result['pruned']} of {result['memory']} exemplars (v >= "
                  f"{result['threshold']:g}); soft pruning down-weights {result['soft_weighted']}")
            at = result[f"accuracy_at_k{k}"]
            for mode, rules in at.items():
                print(f"  {mode:<5}" + "".join(f"  {rule} {value:.4f} (best {result['best_over_k'][mode][rule]['accuracy']:.4f})"
                                               for rule, value in rules.items()))
        elif name == "noise":
            import pandas as pd

            frame = pd.DataFrame(result["rows"])
            print(f"accuracy at k={result['k']} by fraction of memory labels flipped:")
            print(frame.pivot(index="noise", columns="rule", values="accuracy").round(4).to_string())
        elif name == "taxonomy":
            for level, rules in result["accuracy"].items():
                print(f"  {level:<12}" + "".join(f"  {rule} {value:.4f}" for rule, value in rules.items()))
            print(f"held-out class {result['held_out']!r}, its queries at k=1 after adding n exemplars:")
            for row in result["held_out_k1"]:
                print(f"  n={row['added']:<3}" + "".join(f"  {level} {row[level]:.4f}" for level in result["levels"]))
        elif name == "ood":
            for what, r in result.items():
                print(f"  {what}: AUROC {r['auroc']:.4f} ({r['out_queries']} out vs {r['in_queries']} in, mean "
                      f"distance to {r['k']} nearest; medians {r['in_score_median']:.4f} in, "
                      f"{r['out_score_median']:.4f} out)")


def cmd_eval(args) -> int:
    from .evaluate import BEST_LABEL, evaluate_dataset

    if args.experiment:
        if args.rerank or args.limit is not None:
            raise UsageError("--experiment runs on every query without re-ranking: drop --rerank and --limit")
        return _run_experiments(args)
    if args.rerank:
        from .cli_rerank import cmd_eval_rerank

        with _open(args) as memory:
            payload = cmd_eval_rerank(args, memory, _progress_bar)
        if args.json:
            _print_json(payload)
        return 0
    queries, sample = args.queries, None
    if args.limit is not None:
        from .datasets import scan_dataset
        from .rerank.pipeline import sample_items

        every = scan_dataset(Path(args.queries))
        queries = sample_items(every, args.limit, args.seed)
        sample = sample_summary(len(queries), len(every), args.seed)
    with _open(args) as memory:
        result = evaluate_dataset(memory, queries, k_max=args.k_max, pruning=args.pruning,
                                  threshold=args.threshold, progress=_progress_bar("eval", not args.json))
    if args.json:
        _print_json({**result.to_dict(), "sample": sample})
        return 0
    print(f"{result.queries} queries{sample_note(sample)}, k = 1..{result.k_max}, pruning {result.pruning}")
    shown = [k for k in (1, 5, 10, 20, 50, 100) if k <= result.k_max]
    print(f"{'rule':<10}" + "".join(f"{'k=' + str(k):>9}" for k in shown) + f"{'best':>16}")
    if result.k_max == 0:
        print("the memory has no live exemplars: nothing to evaluate against")
        return 0
    for rule, curve in result.accuracy.items():
        best = result.best()[rule]
        print(f"{rule:<10}" + "".join(f"{curve[k - 1]:>9.3f}" for k in shown) + f"{best['accuracy']:>9.3f} (k={best['k']})")
    print(f"best = {BEST_LABEL}")
    if result.unknown_labels:
        print(f"query labels absent from the memory (always wrong): {', '.join(result.unknown_labels)}")
    for path, reason in result.rejected:
        print(f"skipped unreadable query: {reason}", file=sys.stderr)
    return 0


def sample_summary(size: int, total: int, seed: int) -> Optional[dict]:
    """eval --json's "sample": which part of the queries --limit evaluated, or None when it took them all."""
    return {"size": size, "of": total, "seed": seed} if size < total else None


def sample_note(sample: Optional[dict]) -> str:
    """What eval's text output says after the number of queries when --limit evaluated only some of them."""
    return f" (a random sample of {sample['size']} of {sample['of']}, seed {sample['seed']})" if sample else ""


def cmd_search_text(args) -> int:
    from .cli_rerank import cmd_search_text as search

    with _open(args) as memory:
        return search(args, memory)


def _run_experiments(args) -> int:
    from .evaluate import EXPERIMENTS, encode_labelled, run_experiments

    names = list(EXPERIMENTS) if "all" in args.experiment else list(dict.fromkeys(args.experiment))
    if "taxonomy" in names and args.taxonomy is None:
        if "all" in args.experiment:
            names.remove("taxonomy")
        else:
            raise UsageError("--experiment taxonomy needs --taxonomy FILE (CSV: class,group,... one row per label)")
    bar = _progress_bar("experiments", not args.json)
    with _open(args) as memory:
        embeddings, labels, rejected = encode_labelled(memory, args.queries, _progress_bar("encode", not args.json))
        ood = None
        if args.ood_images:
            ood = memory.encode(_expand_images([args.ood_images]))
        results = run_experiments(memory, embeddings, labels, names, _experiment_options(args),
                                  progress=lambda stage, done, total: bar(done, total), ood_embeddings=ood)
    if args.json:
        _print_json({"queries": len(labels), "rejected": [{"path": p, "reason": r} for p, r in rejected],
                     "experiments": results})
        return 0
    print(f"{len(labels)} queries; exact search of the memory's live exemplars, once")
    _print_experiments(results, args.k)
    for path, reason in rejected:
        print(f"skipped unreadable query: {reason}", file=sys.stderr)
    return 0


def cmd_attribute(args) -> int:
    from .attribution import attribute, exemplar_influence
    from .evaluate import encode_labelled

    if bool(args.images) == bool(args.queries):
        raise UsageError("give images to explain, or --queries DIR for per-exemplar influence over a labelled set")
    with _open(args) as memory:
        if args.queries:
            embeddings, labels, _ = encode_labelled(memory, args.queries, _progress_bar("encode", not args.json))
            frame = exemplar_influence(memory, embeddings, labels, args.k, args.voting, args.pruning, args.threshold,
                                       args.top_n)
        else:
            paths = _expand_images(args.images)
            explained = attribute(memory, memory.encode(paths), args.k, args.voting, args.pruning, args.threshold,
                                  args.top_n)
    if args.queries:
        if args.json:
            _print_json({"queries": len(labels), "k": args.k, "voting": args.voting,
                         "exemplars": frame.to_dict("records")})
            return 0
        print(f"{len(labels)} queries, k={args.k}, {args.voting} voting: exemplars by predictions that flip without "
              f"them")
        print(frame.head(args.show).to_string(index=False))
        return 0
    if args.json:
        _print_json([{"image": str(path), "label": rows[0].prediction if rows else None,
                      "neighbors": [{"id": r.id, "label": r.label, "rank": r.rank, "share": r.share,
                                     "without": r.without, "flips": r.flips} for r in rows]}
                     for path, rows in zip(paths, explained)])
        return 0
    for path, rows in zip(paths, explained):
        print(f"{path}: {rows[0].prediction if rows else None}")
        for r in rows[: args.show]:
            flip = f"  -> without it: {r.without}" if r.flips else ""
            print(f"    #{r.rank:<3} id {r.id:<7} {r.label:<16} share {r.share:6.1%}{flip}")
    return 0


def cmd_stats(args) -> int:
    with _open(args) as memory:
        stats = memory.stats()
    if args.json:
        _print_json(stats)
        return 0
    print(f"{stats['path']}: {stats['exemplars']} exemplars ({stats['deleted']} deleted, restorable), "
          f"{stats['classes']} classes, encoder {stats['encoder']} ({stats['dim']}-d)")
    print(f"on disk: {stats['bytes']:,} bytes, {stats['bytes_per_exemplar']:,} bytes per exemplar ("
          + ", ".join(f"{part} {size:,}" for part, size in stats["bytes_per_exemplar_by_part"].items() if size) + ")")
    print(f"in RAM (index and labels, estimated): {stats['ram_bytes']:,} bytes, {stats['ram_bytes_per_exemplar']:,} "
          "bytes per exemplar")
    backend = stats["index_backend"]
    index = stats["index"]
    print(f"index: {backend['name']} at {backend['location']}, {backend['live']} searchable; HNSW M {index['M']}, "
          f"ef_construction {index['ef_construction']}, search ef {index['ef_search']}")
    for label, count in stats["labels"].items():
        print(f"    {label:<20} {count}")
    return 0


def cmd_tune(args) -> int:
    with _open(args) as memory:
        change = memory.set_search_ef(args.ef_search)
        index = dict(memory.stats()["index"])
    if args.json:
        _print_json({"index": index, "previous": {"ef_search": change["from"]}})
    else:
        print(f"{args.memory}: search beam ef {change['from']} -> {change['to']} (M {index['M']}, "
              f"ef_construction {index['ef_construction']} stay as built); queries use max(ef, k)")
    return 0


def cmd_app(args) -> int:
    from .images import MAX_UPLOAD_MEGABYTES

    app = REPO_ROOT / "app.py"
    if not app.exists():
        raise UsageError(f"the app is not installed: {app} is missing")
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "minimal", "--server.headless", str(args.headless).lower()]
    command += ["--server.address", getattr(args, "address", None) or "127.0.0.1"]
    # the upload limit of .streamlit/config.toml, which streamlit reads only when started in this repository
    command += ["--server.maxUploadSize", str(MAX_UPLOAD_MEGABYTES)]
    if args.port:
        command += ["--server.port", str(args.port)]
    env = dict(os.environ)
    if args.memory:
        env["VMEM_MEMORY"] = str(Path(args.memory).resolve())
    if getattr(args, "rerank", None):
        from .rerank import parse_spec

        parse_spec(args.rerank)  # a typo is reported here, not in the browser
        env["VMEM_RERANK"] = args.rerank
    return subprocess.call(command, env=env)


def cmd_demo(args) -> int:
    """Build the sample memory (once), then classify sample queries and evaluate on the query split."""
    from .evaluate import evaluate_dataset
    from .memory import VisualMemory
    from .ood import judge

    memory_path = Path(args.memory)
    with VisualMemory.open_or_create(memory_path) as memory:
        if len(memory) == 0:
            print(f"building the sample memory at {memory_path} from {SAMPLE_DATA / 'memory'} ...")
            memory.build(SAMPLE_DATA / "memory", progress=_progress_bar("build"))
        queries = sorted((SAMPLE_DATA / "queries").glob("*/*.png"))[:: 40] + sorted((REPO_ROOT / "data" / "ood").glob("*"))
        print(f"\nclassifying {len(queries)} sample queries (true label = folder name; ood/ = photos of things the "
              "memory has never seen):")
        if len(memory) == 0:
            raise UsageError(f"{memory_path} holds no live exemplars; restore some (`vmem restore`) or remove the "
                             "folder so that the demo builds it again")
        for result in memory.classify(queries, k=args.k):
            near = result.neighbors[0]
            name = f"{Path(result.image).parent.name}/{Path(result.image).name}"
            flag = "  <- out of distribution?" if judge(memory, near.distance).is_ood else ""
            print(f"  {name:<22} -> {result.label:<11} nearest exemplar {near.id:>4} ({near.label}) "
                  f"at distance {near.distance:.3f}{flag}")
        result = evaluate_dataset(memory, SAMPLE_DATA / "queries", progress=_progress_bar("eval"))
    k = min(args.k, result.k_max)
    print(f"\naccuracy on the {result.queries}-image query split at k={k}: "
          + ", ".join(f"{rule} {curve[k - 1]:.3f}" for rule, curve in result.accuracy.items()))
    print(f"more: vmem stats {memory_path} | vmem classify {memory_path} IMAGE | vmem eval {memory_path} "
          f"{SAMPLE_DATA / 'queries'}")
    if args.no_app:
        return 0
    print(f"\nstarting the app on {memory_path} (Ctrl+C to stop) ...", flush=True)
    return cmd_app(argparse.Namespace(memory=str(memory_path), port=args.port, headless=args.headless,
                                      address="127.0.0.1"))


# --- parser ---------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .backends import BACKENDS
    from .cli_rerank import add_rerank_options
    from .encoders import DEFAULT_ENCODER
    from .voting import DEFAULT_HARD_THRESHOLD, DEFAULT_RULE, PRUNING_MODES, RULES

    parser = argparse.ArgumentParser(prog="vmem", description="A visual memory you can see into and edit.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what vmem does")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def voting_options(p):
        p.add_argument("--voting", default=DEFAULT_RULE, choices=RULES, help="voting rule (default: rank)")
        p.add_argument("--pruning", default="none", choices=PRUNING_MODES,
                       help="skip (hard) or down-weight (soft) unreliable exemplars")
        p.add_argument("--threshold", type=float, default=DEFAULT_HARD_THRESHOLD,
                       help=f"hard pruning skips exemplars with v >= this (default {DEFAULT_HARD_THRESHOLD:g})")
        p.add_argument("--top-n", type=int, default=10,
                       help="reliability v counts appearances among this many leave-one-out neighbours")

    index_uri = argparse.ArgumentParser(add_help=False)
    index_uri.add_argument("--index-uri", default=None, metavar="URI",
                           help="a Milvus memory's server (e.g. http://host:19530; token in $VMEM_MILVUS_TOKEN), "
                                "overriding the one it records")

    p = sub.add_parser("build", parents=[index_uri],
                       help="create or extend a memory from an ImageFolder directory or a path,label CSV")
    p.add_argument("data", help="DIR/<label>/<image> or a CSV with columns path,label")
    p.add_argument("--memory", required=True, help="memory directory (created if missing)")
    p.add_argument("--encoder", default=None, help=f"encoder for a new memory (default: {DEFAULT_ENCODER})")
    p.add_argument("--backend", default="hnswlib", choices=BACKENDS,
                   help="index of a new memory: hnswlib (embedded, default) or milvus (embedded milvus-lite, or the "
                        "server given by --index-uri)")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local (this process) or ray (Ray Data: a local Ray instance, or --ray-address)")
    p.add_argument("--ray-address", default=None, help="Ray cluster to run on (e.g. ray://head:10001 or auto)")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    p.add_argument("--index-m", dest="M", type=int, default=None,
                   help="a new memory's HNSW graph degree M (default 16; bench/search.py shows the trade-off)")
    p.add_argument("--index-ef-construction", dest="ef_construction", type=int, default=None,
                   help="a new memory's HNSW build beam (default 200; lower builds faster, with lower recall)")
    p.add_argument("--index-ef", dest="ef_search", type=int, default=None,
                   help="a new memory's HNSW search beam (default 128; at least k is used)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("migrate",
                       help="move a memory's index to another backend (hnswlib or Milvus), rebuilt from its database")
    p.add_argument("memory")
    p.add_argument("--to", required=True, choices=BACKENDS, help="the backend to move to")
    p.add_argument("--index-uri", dest="target_uri", default=None, metavar="URI",
                   help="with --to milvus: the Milvus server to move to (e.g. http://host:19530); without it, Milvus "
                        "runs embedded in the memory folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("add", parents=[index_uri], help="add images (files or folders) under one label")
    p.add_argument("memory")
    p.add_argument("images", nargs="+")
    p.add_argument("--label", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_add)

    for name, func, text in (("delete", cmd_delete, "tombstone exemplars by id (undo with restore)"),
                             ("restore", cmd_restore, "bring back deleted exemplars")):
        p = sub.add_parser(name, parents=[index_uri], help=text)
        p.add_argument("memory")
        p.add_argument("ids", nargs="+", type=_exemplar_id, metavar="ID")
        p.set_defaults(func=func)
        if name == "delete":
            from .memory import NEAR_DUPLICATE_DISTANCE

            p.add_argument("--duplicate-distance", type=float, default=NEAR_DUPLICATE_DISTANCE,
                           help="warn of live exemplars closer than this to a deleted one")

    p = sub.add_parser("purge", parents=[index_uri],
                       help="remove exemplars physically, with a certificate of the checks")
    p.add_argument("memory")
    p.add_argument("ids", nargs="*", type=_exemplar_id, metavar="ID")
    p.add_argument("--all", action="store_true", help="purge every tombstoned exemplar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("audit", parents=[index_uri],
                       help="show the hash-chained audit log (vmem audit MEM), or check it (vmem audit verify MEM)")
    p.add_argument("words", nargs="+", metavar="[verify] MEM")
    p.add_argument("--limit", type=int, default=50, help="entries to show (newest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("classify", parents=[index_uri], help="classify images by their nearest exemplars")
    p.add_argument("memory")
    p.add_argument("images", nargs="+")
    p.add_argument("--k", type=int, default=50)
    voting_options(p)
    p.add_argument("--show", type=int, default=5, help="neighbours to print per image (text output)")
    p.add_argument("--zero-shot", action="store_true",
                   help="also score each label by its name (CLIP encoders only): see vmem search-text")
    p.add_argument("--json", action="store_true")
    add_rerank_options(p, batch=False)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("eval", parents=[index_uri],
                       help="accuracy of every rule at every k on a labelled query folder or CSV")
    p.add_argument("memory")
    p.add_argument("queries")
    p.add_argument("--k-max", type=int, default=100)
    voting_options(p)
    p.add_argument("--json", action="store_true")
    from .evaluate import EXPERIMENTS, ExperimentOptions

    defaults = ExperimentOptions()
    group = p.add_argument_group("experiments (exact search once, every rule and k from it)")
    group.add_argument("--experiment", action="append", choices=(*EXPERIMENTS, "all"),
                       help="run one of the paper's experiments instead of the plain evaluation (repeatable)")
    group.add_argument("--k", type=int, default=defaults.k, help="the fixed k reported beside best-over-k")
    group.add_argument("--sizes", type=int, nargs="+", default=list(defaults.sizes), help="exemplars per class")
    group.add_argument("--seeds", type=int, default=len(defaults.seeds), help="random subsets per memory size")
    group.add_argument("--new-classes", nargs="+", default=None, metavar="LABEL",
                       help="classes added later in new-classes (default: the last label)")
    group.add_argument("--noise", type=float, nargs="+", default=list(defaults.noise),
                       help="fractions of memory labels flipped")
    group.add_argument("--taxonomy", type=Path, default=None, help="CSV class,group,... for the taxonomy experiment")
    group.add_argument("--held-out", default=None, metavar="LABEL", help="class held out in taxonomy")
    group.add_argument("--added", type=int, nargs="+", default=list(defaults.added),
                       help="exemplars of the held-out class added back (taxonomy, k=1)")
    group.add_argument("--ood-held-out", nargs="+", default=None, metavar="LABEL",
                       help="classes left out of memory for ood (default: as --new-classes)")
    group.add_argument("--ood-images", default=None, metavar="DIR", help="other images scored as out of distribution")
    add_rerank_options(p, batch=True)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("search-text", parents=[index_uri],
                       help="the exemplars nearest to a sentence (memories with a CLIP encoder)")
    p.add_argument("memory")
    p.add_argument("text")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search_text)

    p = sub.add_parser("attribute", parents=[index_uri],
                       help="which exemplars drove predictions, and what each prediction would be without each of them")
    p.add_argument("memory")
    p.add_argument("images", nargs="*")
    p.add_argument("--queries", default=None, help="labelled folder or CSV: per-exemplar influence over it")
    p.add_argument("--k", type=int, default=10)
    voting_options(p)
    p.add_argument("--show", type=int, default=10, help="rows to print (text output)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_attribute)

    p = sub.add_parser("stats", parents=[index_uri], help="counts per label, encoder, size on disk, index backend")
    p.add_argument("memory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("tune", parents=[index_uri], help="change a memory's HNSW search beam (ef)")
    p.add_argument("memory")
    p.add_argument("--index-ef", dest="ef_search", type=int, required=True,
                   help="search beam from now on: higher finds more of the true neighbours, slower")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("app", help="start the Streamlit app")
    p.add_argument("memory", nargs="?", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--address", default="127.0.0.1",
                   help="interface to serve on (default: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--headless", action="store_true")
    p.add_argument("--rerank", metavar="SPEC", default=None,
                   help="offer 'Ask the model' on the Classify page (gemini:<model> or openai:<base-url>:<model>)")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("demo", help="build the shipped sample memory, classify sample queries, open the app")
    p.add_argument("--memory", default=str(REPO_ROOT / "sample.vmem"))
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--no-app", action="store_true", help="stop after the printed summary")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--headless", action="store_true", help="do not try to open a browser")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="vmem: %(message)s",
                        stream=sys.stderr)
    for noisy in ("huggingface_hub", "urllib3", "root", "pymilvus"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for option in ("k", "k_max", "top_n", "threshold", "rerank_shown", "limit"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    return _execute(args)


def _execute(args) -> int:
    """Run a parsed command: errors vmem raises on purpose become one line on stderr and exit status 2."""
    try:
        try:
            return args.func(args)
        except MemoryLockedError as locked:
            return _run_in_holder(args, locked)
    except VmemError as exc:
        print(f"vmem: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. piped into `head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("vmem: interrupted; committed changes are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
