"""The commands on a memory: build, add, delete, purge, classify, evaluate, ... (one function each, `cmd_<name>`)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..devices import devices_text
from ..errors import BadImageError
from ..storage.layout import CONFIG_NAME
from .common import (
    UsageError,
    expand_images,
    open_memory,
    parse_exemplar_id,
    print_json,
    progress_bar,
    sample_note,
    sample_summary,
    vote_settings,
)


def cmd_build(args) -> int:
    if args.engine == "local" and (args.ray_address or args.ray_cpus):
        raise UsageError("--ray-address and --ray-cpus go with --engine ray")
    from ..ingest.datasets import check_dataset_labels, scan_dataset

    # a missing folder, an empty one or a bad label is refused before the memory is created: a rejected build
    # leaves no empty memory behind
    items = scan_dataset(Path(args.data))
    check_dataset_labels(items)
    path = Path(args.memory)
    created, existed = not (path / CONFIG_NAME).exists(), path.exists()  # a memory held by the app has its config
    stopped = None
    with open_memory(args, create=True) as memory:
        progress = progress_bar("build", not args.json)
        try:
            if args.engine == "ray":
                try:
                    from ..ingest.ray_build import build_with_ray
                except ImportError as exc:
                    raise UsageError(f"--engine ray needs Ray: pip install -r requirements-scale.txt ({exc})") from None
                report = build_with_ray(memory, items, address=args.ray_address, num_cpus=args.ray_cpus,
                                        progress=progress, strict=args.strict)
            else:
                report = memory.exemplars.build(items, progress=progress, strict=args.strict)
        except BadImageError as exc:  # --strict: the chunks before the image are committed
            stopped = (exc, len(memory))
        else:
            stats = memory.stats()
    if stopped is not None:
        _strict_stop(path, *stopped, created=created and not getattr(args, "index_uri", None), existed=existed)
    if args.json:
        print_json({"added": report.added, "skipped_existing": report.skipped_existing,
                     "rejected": [{"path": p, "reason": r} for p, r in report.rejected],
                     "exemplars": stats["exemplars"], "labels": stats["labels"]})
    else:
        print(f"added {report.added} exemplar(s) to {args.memory} ({stats['exemplars']} live, "
              f"{stats['classes']} classes); {report.skipped_existing} already present")
        for path, reason in report.rejected:
            print(f"skipped unreadable image: {reason}", file=sys.stderr)
    hint = exact_backend_hint(args.memory, stats)
    if hint:
        print(hint, file=sys.stderr)  # stderr: --json's stdout stays the contract
    return 0


def _strict_stop(path: Path, exc: Exception, live: int, created: bool, existed: bool):
    """`build --strict` stopped at an unreadable image: a memory this build created and left empty is removed (there
    is nothing to resume); one that holds exemplars is kept, and the error says so."""
    import shutil

    if created and live == 0:
        shutil.rmtree(path, ignore_errors=True)
        if existed:  # it was an empty folder before: left as it was
            path.mkdir(parents=True, exist_ok=True)
        raise BadImageError(f"{exc}; --strict stopped the build before anything was added: the new memory {path} "
                            "was removed") from None
    raise BadImageError(f"{exc}; --strict stopped the build: {path} is kept with the {live} exemplar(s) it holds "
                        "(those read before the image included); fix or remove the image and rerun the build to go on "
                        "(exemplars already present are skipped)") from None


EXACT_BYTES_PER_VALUE = 6  # the exact backend on a GPU keeps float32 vectors and a float16 copy (backends.exact)
FITS_FRACTION = 0.5  # of the GPU's memory: room left for the encoder and the search's scores


def exact_backend_hint(memory_path, stats: dict) -> str | None:
    """On a machine whose device is a GPU, for a memory on hnswlib that fits the GPU's memory: the line that says
    `--backend exact` is the natural choice there (issue 14); None otherwise."""
    from .. import devices

    if stats["index_backend"]["name"] != "hnswlib":
        return None
    device = devices.resolve_device()
    if not device.is_cuda:
        return None
    needed = stats["exemplars"] * stats["dim"] * EXACT_BYTES_PER_VALUE
    available = devices.memory_bytes(device)
    if needed > FITS_FRACTION * available:
        return None
    return (f"vmem: hint: {device.name} ({device.description}) is a GPU and this memory's vectors fit it "
            f"({needed / 2**20:,.0f} MiB of {available / 2**30:,.0f} GiB): --backend exact searches every exemplar "
            f"there, exactly and faster than hnswlib; `vmem migrate {memory_path} --to exact` moves this one")


def cmd_migrate(args) -> int:
    import time

    start = time.perf_counter()
    with open_memory(args) as memory:
        moved = memory.index.move(args.to, index_uri=args.target_uri)
        live = len(memory)
    seconds = time.perf_counter() - start
    if args.json:
        print_json({**moved, "exemplars": live, "seconds": round(seconds, 3)})
    else:
        print(f"moved the index of {args.memory} from {moved['from']['name']} ({moved['from']['location']}) to "
              f"{moved['to']['name']} ({moved['to']['location']}): {live} live exemplars, {seconds:.1f} s; "
              "the old index was removed")
    return 0


def cmd_add(args) -> int:
    with open_memory(args) as memory:
        ids = memory.exemplars.add(expand_images(args.images), args.label,
                                   progress=progress_bar("encode", not args.json))
    if args.json:
        print_json({"ids": ids, "label": args.label})
    else:
        print(f"added {len(ids)} exemplar(s) labelled {args.label!r}: ids {', '.join(map(str, ids))}")
    return 0


def cmd_delete(args) -> int:
    with open_memory(args) as memory:
        memory.exemplars.delete(args.ids)
        duplicates = memory.exemplars.near_duplicates_of(args.ids, args.duplicate_distance)
    print(f"deleted {len(args.ids)} exemplar(s) (tombstoned: excluded from queries; `vmem restore` undoes it, "
          "`vmem purge` removes them for good)")
    for exemplar_id, close in duplicates.items():
        listed = ", ".join(f"{other} (distance {d:.4f})" for other, d in close)
        print(f"warning: exemplar {exemplar_id} has near-duplicates still in memory: {listed}; they keep nearly the "
              f"same influence (delete them too: vmem delete {args.memory} {' '.join(str(o) for o, _ in close)})",
              file=sys.stderr)
    return 0


def cmd_purge(args) -> int:
    from ..unlearn import purge

    if args.memory == "verify" and args.verify_certificate is None:  # vmem purge verify CERT MEM
        if len(args.ids) != 2 or args.all or args.certificate:
            raise UsageError("usage: vmem purge verify CERT MEM [--json]")
        args.verify_certificate, args.memory, args.ids = args.ids[0], args.ids[1], []
    if args.verify_certificate is not None:
        return _verify_purge_certificate(args)
    ids = [parse_exemplar_id(text) for text in args.ids]
    if not ids and not args.all:
        raise UsageError("give exemplar ids to purge, or --all for every tombstoned exemplar")
    if ids and args.all:
        raise UsageError("give either exemplar ids or --all, not both")
    with open_memory(args) as memory:
        live = [i for i, cls in zip(ids, memory.table.class_indices(ids)) if cls >= 0]
        if live and not getattr(args, "live", False):  # a purge cannot be undone: a live exemplar needs a word more
            raise UsageError(f"exemplar id(s) {', '.join(map(str, live[:20]))} are live: a purge removes them for "
                             f"good; tombstone them first (`vmem delete {args.memory} ID...`, undoable), or pass "
                             "--live to purge live exemplars at once")
        certificate = purge(memory, None if args.all else ids, certificate_path=args.certificate)
    if args.json:
        print_json(certificate.to_dict())
    else:
        print(certificate.explain())
        if args.certificate:
            print(f"certificate written to {args.certificate}; keep it: the memory holds nothing that identifies "
                  "what was removed, only commitments that this certificate opens (`vmem purge verify`)")
        else:
            print("vmem: note: no certificate was kept (the memory holds nothing that identifies what was removed); "
                  "pass --certificate PATH or --json to keep one", file=sys.stderr)
    return 0 if certificate.passed else 1


def _verify_purge_certificate(args) -> int:
    import json

    from ..purge_proof import verify_certificate

    try:
        certificate = json.loads(Path(args.verify_certificate).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"certificate {args.verify_certificate}: unreadable ({exc}); expected the JSON that "
                         "`vmem purge --certificate PATH` wrote") from None
    if not isinstance(certificate, dict):
        raise UsageError(f"certificate {args.verify_certificate}: not a purge certificate (expected a JSON object)")
    args.read_only = True
    with open_memory(args) as memory:
        result = verify_certificate(memory, certificate)
    if args.json:
        print_json(result.to_dict())
    else:
        for check in result.checks:
            print(f"{'PASSED' if check.passed else 'FAILED'}  {check.name}: {check.detail}")
        print(f"certificate {'verified' if result.ok else 'NOT verified'} against {args.memory}")
    return 0 if result.ok else 1


AUDIT_DETAILS_SHOWN = 200  # characters of an entry's details in `vmem audit`'s text output


def cmd_audit(args) -> int:
    words = list(args.words)
    verify_mode = words[:1] == ["verify"]
    if verify_mode:
        words = words[1:]
    if len(words) != 1:
        raise UsageError("usage: vmem audit MEM | vmem audit verify MEM")
    args.memory = words[0]
    with open_memory(args) as memory:
        entries = memory.audit.log()
        result = memory.audit.verify()
    if verify_mode:
        if args.json:
            print_json(result.to_dict())
        else:
            print(("audit log intact: " if result.ok else "audit log BROKEN: ") + result.reason)
        return 0 if result.ok else 1
    if args.json:
        print_json([{**entry.__dict__, "details": entry.payload()} for entry in entries])
        return 0
    for entry in entries[-args.limit:]:
        details = entry.details
        if len(details) > AUDIT_DETAILS_SHOWN:  # e.g. a purge of hundreds: a commitment per exemplar
            details = f"{details[:AUDIT_DETAILS_SHOWN]}... ({len(details):,} characters; --json shows them all)"
        print(f"#{entry.seq:<5} {entry.at}  {entry.actor}  {entry.action:<8} {details}")
    return 0


def cmd_restore(args) -> int:
    with open_memory(args) as memory:
        memory.exemplars.restore(args.ids)
    print(f"restored {len(args.ids)} exemplar(s)")
    return 0


# above this many exemplars, a whole-memory pass is slow enough (seconds) that a classify without a table says so
TABLE_HINT_EXEMPLARS = 5_000


def cmd_classify(args) -> int:
    from ..analysis.ood import judge
    from .rerank import print_extras, query_extras

    with open_memory(args) as memory:
        images = expand_images(args.images)
        loaded = memory.exemplars.load_images(images)
        embeddings = memory.encoder.encode([item.image for item in loaded])
        results = memory.search.classify_embeddings(embeddings, vote_settings(args), names=[str(p) for p in images])
        extras = query_extras(args, memory, loaded, embeddings, progress_bar("ask the model", not args.json))
        # the OOD threshold reads the memory's neighbour table: only the text output shows it
        if not args.json and not memory.reliability.table_is_kept() and len(memory) > TABLE_HINT_EXEMPLARS:
            print(f"note: {args.memory} keeps no neighbour table, so the out-of-distribution threshold searches the "
                  f"whole memory on every call; `vmem neighbour-table {args.memory}` builds and keeps one",
                  file=sys.stderr)
        verdicts = [] if args.json else [judge(memory, r.neighbors[0].distance) if r.neighbors else None
                                         for r in results]
    if args.json:
        print_json([{**r.to_dict(), **extra} for r, extra in zip(results, extras)])
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
    from ..analysis.registry import ExperimentOptions

    return ExperimentOptions(
        vote=vote_settings(args), k_max=args.k_max, sizes=args.sizes, seeds=list(range(args.seeds)),
        new_classes=args.new_classes, noise=args.noise, taxonomy=args.taxonomy, held_out=args.held_out,
        added=args.added, ood_held_out=args.ood_held_out,
    )


def cmd_eval(args) -> int:
    from ..analysis.evaluate import BEST_LABEL, evaluate_dataset

    if args.rerank_ablations and not args.rerank:
        raise UsageError("--rerank-ablations compares re-ranking configurations: it needs --rerank SPEC "
                         "(e.g. --rerank gemini:gemini-2.5-flash)")
    if args.experiment:
        if args.rerank or args.limit is not None:
            raise UsageError("--experiment runs on every query without re-ranking: drop --rerank and --limit")
        return _run_experiments(args)
    if args.rerank:
        from .rerank import cmd_eval_rerank

        with open_memory(args) as memory:
            payload = cmd_eval_rerank(args, memory, progress_bar)
        if args.json:
            print_json(payload)
        return 0
    queries, sample = args.queries, None
    if args.limit is not None:
        from ..ingest.datasets import scan_dataset
        from ..rerank.pipeline import sample_items

        every = scan_dataset(Path(args.queries))
        queries = sample_items(every, args.limit, args.seed)
        sample = sample_summary(len(queries), len(every), args.seed)
    with open_memory(args) as memory:
        result = evaluate_dataset(memory, queries, k_max=args.k_max, settings=vote_settings(args),
                                  progress=progress_bar("eval", not args.json))
    if args.json:
        print_json({**result.to_dict(), "sample": sample})
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


def cmd_search_text(args) -> int:
    from .rerank import cmd_search_text as search

    with open_memory(args) as memory:
        return search(args, memory)


def _run_experiments(args) -> int:
    from ..analysis.evaluate import encode_labelled
    from ..analysis.registry import REGISTRY, run_experiments, text_report

    names = list(REGISTRY) if "all" in args.experiment else list(dict.fromkeys(args.experiment))
    for name in list(names):
        for option, what in REGISTRY[name].requires.items():
            if getattr(args, option) is None:
                if "all" not in args.experiment:
                    raise UsageError(f"--experiment {name} needs --{option.replace('_', '-')} {what}")
                names.remove(name)  # "all" runs what the options given allow
                break
    bar = progress_bar("experiments", not args.json)
    with open_memory(args) as memory:
        embeddings, labels, rejected = encode_labelled(memory, args.queries, progress_bar("encode", not args.json))
        ood = None
        if args.ood_images:
            ood = memory.exemplars.encode(expand_images([args.ood_images]))
        results = run_experiments(memory, embeddings, labels, names, _experiment_options(args),
                                  progress=lambda stage, done, total: bar(done, total), ood_embeddings=ood)
    if args.json:
        print_json({"queries": len(labels), "rejected": [{"path": p, "reason": r} for p, r in rejected],
                     "experiments": results})
        return 0
    print(f"{len(labels)} queries; exact search of the memory's live exemplars, once")
    print(text_report(results, args.k), end="")
    for path, reason in rejected:
        print(f"skipped unreadable query: {reason}", file=sys.stderr)
    return 0


def cmd_attribute(args) -> int:
    from ..analysis.attribution import attribute, exemplar_influence
    from ..analysis.evaluate import encode_labelled

    if bool(args.images) == bool(args.queries):
        raise UsageError("give images to explain, or --queries DIR for per-exemplar influence over a labelled set")
    with open_memory(args) as memory:
        if args.queries:
            embeddings, labels, _ = encode_labelled(memory, args.queries, progress_bar("encode", not args.json))
            frame = exemplar_influence(memory, embeddings, labels, vote_settings(args))
        else:
            paths = expand_images(args.images)
            explained = attribute(memory, memory.exemplars.encode(paths), vote_settings(args))
    if args.queries:
        if args.json:
            print_json({"queries": len(labels), "k": args.k, "voting": args.voting,
                         "exemplars": frame.to_dict("records")})
            return 0
        print(f"{len(labels)} queries, k={args.k}, {args.voting} voting: exemplars by predictions that flip without "
              f"them")
        print(frame.head(args.show).to_string(index=False))
        return 0
    if args.json:
        print_json([{"image": str(path), "label": rows[0].prediction if rows else None,
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
    with open_memory(args) as memory:
        stats = memory.stats()
    if args.json:
        print_json(stats)
        return 0
    print(f"{stats['path']}: {stats['exemplars']} exemplars ({stats['deleted']} deleted, restorable), "
          f"{stats['classes']} classes, encoder {stats['encoder']} ({stats['dim']}-d)")
    if stats["bytes_per_exemplar"] is None:  # nothing to divide the fixed overhead by
        print(f"on disk: {stats['bytes']:,} bytes, per exemplar n/a (no exemplars)")
        print(f"in RAM (index and labels, estimated): {stats['ram_bytes']:,} bytes, per exemplar n/a (no exemplars)")
    else:
        print(f"on disk: {stats['bytes']:,} bytes, {stats['bytes_per_exemplar']:,} bytes per exemplar ("
              + ", ".join(f"{part} {size:,}" for part, size in stats["bytes_per_exemplar_by_part"].items() if size)
              + ")")
        print(f"in RAM (index and labels, estimated): {stats['ram_bytes']:,} bytes, "
              f"{stats['ram_bytes_per_exemplar']:,} bytes per exemplar")
    backend = stats["index_backend"]
    index = stats["index"]
    if backend["name"] == "exact":
        print(f"index: exact at {backend['location']}, {backend['live']} searchable; every query is scored against "
              f"every live exemplar ({backend['precision']})")
    else:
        print(f"index: {backend['name']} at {backend['location']}, {backend['live']} searchable; HNSW M "
              f"{index['M']}, ef_construction {index['ef_construction']}, search ef {index['ef_search']}")
    print(f"devices: {devices_text(stats['devices'])}")
    for label, count in stats["labels"].items():
        print(f"    {label:<20} {count}")
    return 0


def cmd_tune(args) -> int:
    from ..backends.hnsw_index import MAX_EF

    if not 1 <= args.ef_search <= MAX_EF:
        raise UsageError(f"--index-ef {args.ef_search}: search beam ef {args.ef_search}: must be a positive integer, at "
                         f"most {MAX_EF:,} (a wider beam searches no better and takes memory and time)")
    with open_memory(args) as memory:
        change = memory.index.set_search_ef(args.ef_search)
        stats = memory.stats()
        index, backend = dict(stats["index"]), stats["index_backend"]["name"]
    if args.json:
        print_json({"index": index, "previous": {"ef_search": change["from"]}})
    elif backend == "exact":  # kept in vmem.json for a later migrate back; exact search has no beam to set
        print(f"{args.memory}: search beam ef {change['from']} -> {change['to']} kept, but unused: this memory's "
              f"index is exact search, which has no beam; it applies after `vmem migrate {args.memory} --to hnswlib`")
    else:
        print(f"{args.memory}: search beam ef {change['from']} -> {change['to']} (M {index['M']}, "
              f"ef_construction {index['ef_construction']} stay as built); queries use max(ef, k)")
    return 0
