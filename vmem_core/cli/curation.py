"""The app's curation on the command line: `relabel` (the Memory and Curate pages' relabel), `ls` (the Memory page's
browser), `curate` (the Curate page's suggestions), `map` (the Map page's figure, as a standalone HTML file) and
`neighbour-table` (the table that reliability, curation and the OOD threshold read, which the app builds in the
background for a memory that has none).

Each prints text, or with --json an object whose keys are a contract (docs/cli-and-app.md lists them). Bad input is
refused before anything is changed or written, with one line naming the bad value and what is accepted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from .common import UsageError, open_memory, print_json, vote_settings


# --- argument types (their values stay strings: a command forwarded to the app travels as JSON) ----------------------
def day_or_time(text: str) -> str:
    """--since/--until as argparse type: an ISO date (2026-12-06) or date and time (2026-12-06T14:30), kept as text."""
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date; accepted: YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] (UTC)") from None
    return text


def _bounds(args) -> dict:
    """The browse filters for --since (inclusive) and --until (inclusive: a bare date means its whole day)."""
    filters = {}
    if args.since:
        filters["added_from"] = _naive_utc(dt.datetime.fromisoformat(args.since))
    if args.until:
        until = _naive_utc(dt.datetime.fromisoformat(args.until))
        # a bare date names a day; a time names an instant, and the instant itself is included
        filters["added_to"] = until + (dt.timedelta(days=1) if len(args.until) <= 10 else dt.timedelta(microseconds=1))
    if "added_from" in filters and "added_to" in filters and filters["added_from"] >= filters["added_to"]:
        raise UsageError(f"--since {args.since} is after --until {args.until}: no exemplar can match")
    return filters


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    # the store keeps added_at as naive UTC: an explicit offset is converted, a naive time is taken as UTC
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _known_label(memory, label: str, what: str) -> str:
    """`label` as stored, if the memory has it (live or tombstoned exemplars); else a usage error listing its labels."""
    from ..ingest.names import check_label

    label = check_label(label)
    if label in memory.table.labels or memory.exemplars.count(label=label, include_deleted=True):
        return label
    raise UsageError(f"{what} {label!r} is not a label of {memory.path.name}; accepted: {_labels_text(memory)}")


def _labels_text(memory) -> str:
    labels = memory.table.labels
    more = f", ... ({len(labels)} in all)" if len(labels) > 30 else ""
    shown = ", ".join(repr(name) for name in labels[:30]) + more
    return shown or "none (it is empty)"


def _timestamp(value):
    import pandas as pd

    return None if value is None or pd.isna(value) else pd.Timestamp(value).isoformat()


# --- relabel ---------------------------------------------------------------------------------------------------------
def cmd_relabel(args) -> int:
    import pandas as pd

    from ..ingest.names import check_label

    ids = list(dict.fromkeys(args.ids))  # each once, in the order given
    with open_memory(args) as memory:
        label = check_label(args.label)
        created = label not in memory.table.labels
        if created and not args.new:
            raise UsageError(f"label {label!r} is not in {memory.path.name} (accepted: {_labels_text(memory)}); "
                             "pass --new to create it")
        rows = memory.exemplars.rows(ids)
        found = {int(i): (lab, deleted) for i, lab, deleted in zip(rows["id"], rows["label"], rows["deleted_at"])}
        missing = [i for i in ids if i not in found]
        if missing:
            raise UsageError(f"unknown exemplar id(s): {', '.join(map(str, missing[:20]))}; `vmem ls {args.memory}` "
                             "lists the ids")
        deleted = [i for i in ids if not pd.isna(found[i][1])]
        if deleted:
            raise UsageError(f"exemplar(s) {', '.join(map(str, deleted[:20]))} are deleted; restore them first "
                             f"(`vmem restore {args.memory} ID...`) or relabel live ones only")
        memory.exemplars.relabel(ids, label)
    previous = [{"id": i, "label": found[i][0]} for i in ids]
    changed = [i for i in ids if found[i][0] != label]
    if args.json:
        print_json({"ids": ids, "label": label, "changed": changed, "previous": previous,
                    "new_label": created})
    else:
        print(f"relabelled {len(changed)} exemplar(s) as {label!r}"
              + (f"; {len(ids) - len(changed)} already had it" if len(changed) < len(ids) else "")
              + (f": ids {', '.join(map(str, changed))}" if changed else ""))
    return 0


# --- neighbour-table -------------------------------------------------------------------------------------------
def cmd_neighbours(args) -> int:
    import time

    from .common import progress_bar

    start = time.perf_counter()
    with open_memory(args) as memory:
        had_file = memory.reliability.table_is_kept()
        bar = progress_bar("neighbour table", enabled=not args.json)  # it reports only for a full pass
        table = memory.reliability.rebuild_table(bar) if args.rebuild else memory.reliability.table(progress=bar)
        memory.index.flush()  # the table is derived data: written now, where it was built or brought up to date
        saved = memory.reliability.table_is_kept()
        change = memory.change_counter
    report = {"exemplars": len(table), "depth": table.depth, "change": change, "rebuilt": bool(args.rebuild),
              "built": bool(args.rebuild or not had_file), "saved": saved,
              "seconds": round(time.perf_counter() - start, 3)}
    if args.json:
        print_json(report)
    else:
        how = "rebuilt" if args.rebuild else ("built" if report["built"] else "brought up to date")
        print(f"neighbour table {how}: {report['exemplars']:,} exemplars x {report['depth']} neighbours, at change "
              f"#{change}, in {report['seconds']:.1f} s" + ("" if saved else " (not saved: see the warning above)"))
    return 0


# --- ls --------------------------------------------------------------------------------------------------------------
LS_COLUMNS = ("id", "label", "source", "sha256", "added_at", "deleted_at")


def cmd_ls(args) -> int:
    if args.offset < 0:
        raise UsageError(f"--offset must be 0 or more, got {args.offset}")
    filters = _bounds(args)
    if args.source:
        filters["source"] = args.source
    with open_memory(args) as memory:
        if args.label is not None:
            filters["label"] = _known_label(memory, args.label, "--label")
        total, rows = _listing(memory, filters, args.deleted, args.limit, args.offset)
    records = [{column: (_timestamp(row[column]) if column.endswith("_at") else row[column]) for column in LS_COLUMNS}
               for row in rows]
    for record in records:
        record["id"] = int(record["id"])
    if args.json:
        print_json({"total": total, "offset": args.offset, "limit": args.limit, "exemplars": records})
        return 0
    for record in records:
        gone = f"  deleted {record['deleted_at'][:19]}" if record["deleted_at"] else ""
        print(f"{record['id']:>8}  {record['label']:<20}  {(record['added_at'] or '')[:19]}{gone}  {record['source']}")
    end = args.offset + len(records)
    if not records:
        print(f"no exemplars match ({total} in all)" if args.offset == 0 or not total
              else f"nothing at offset {args.offset}: {total} match", file=sys.stderr)
    else:
        more = f"; next page: --offset {end}" if end < total else ""
        print(f"{args.offset + 1}-{end} of {total}{more}", file=sys.stderr)  # stderr: stdout is one row a line
    return 0


def _listing(memory, filters: dict, deleted: str, limit: int, offset: int) -> tuple[int, list[dict]]:
    """(how many match, the page of rows) for --deleted live (the default), all or only."""
    if deleted != "only":
        include = deleted == "all"
        frame = memory.exemplars.browse(include_deleted=include, limit=limit, offset=offset, thumbnails=False, **filters)
        return memory.exemplars.count(include_deleted=include, **filters), frame.to_dict("records")
    # tombstoned exemplars are few (purge removes them); browse has no "deleted only" filter, so they are read by id
    # and the same filters applied here
    frame = memory.exemplars.rows(memory.exemplars.tombstoned_ids()).sort_values("id")
    if "label" in filters:
        frame = frame[frame["label"] == filters["label"]]
    if "source" in filters:
        frame = frame[frame["source"].str.lower().str.contains(filters["source"].lower(), regex=False)]
    if "added_from" in filters:
        frame = frame[frame["added_at"] >= filters["added_from"]]
    if "added_to" in filters:
        frame = frame[frame["added_at"] < filters["added_to"]]
    return len(frame), frame.iloc[offset:offset + limit].to_dict("records")


# --- curate ----------------------------------------------------------------------------------------------------------
def cmd_curate(args) -> int:
    from ..analysis.curate import curation_settings, suspicious_exemplars

    settings = vote_settings(args)
    with open_memory(args) as memory:
        live = len(memory)
        if live < 2:
            raise UsageError(f"{args.memory} holds {live} live exemplar(s); curation compares exemplars with their "
                             "neighbours and needs at least 2")
        suggestions = suspicious_exemplars(memory, settings, limit=args.limit)
    used = curation_settings(settings)
    if args.json:
        print_json({"exemplars": live, "k": used.k, "voting": used.rule, "top_n": used.top_n,
                    "suggestions": [{"id": s.id, "label": s.label, "v": s.reliability,
                                     "suggested_label": s.suggested_label, "score": round(s.score, 6),
                                     "reason": s.reason} for s in suggestions]})
        return 0
    if not suggestions:
        print(f"no suspects among {live} exemplars: every one agrees with its neighbours")
        return 0
    print(f"{'id':>8}  {'label':<16} {'v':>4}  {'score':>5}  suggested")
    for s in suggestions:
        print(f"{s.id:>8}  {s.label:<16} {s.reliability:>4}  {s.score:5.2f}  {s.suggested_label or '-'}")
    print(f"the {len(suggestions)} exemplar(s) most likely mislabelled of {live} ({used.rule} voting, k {used.k}, "
          f"v over the top {used.top_n}); accept one with `vmem relabel {args.memory} ID LABEL` or `vmem delete`",
          file=sys.stderr)
    return 0


# --- map -------------------------------------------------------------------------------------------------------------
def cmd_map(args) -> int:
    from ..analysis.memory_map import deleted_points, map_labels, memory_map, resolve_method

    out = Path(args.out).expanduser()
    if out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {args.out}: the map is an HTML page; accepted: a path ending in .html")
    if not out.parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; accepted: a file path ending in .html")
    memory_folder = Path(args.memory).resolve()
    if memory_folder == out.resolve().parent or memory_folder in out.resolve().parents:
        raise UsageError(f"--out {args.out} is inside the memory folder; a map is written outside it (reading a "
                         "memory never writes into it)")
    with open_memory(args) as memory:
        live = len(memory)
        if not live:
            raise UsageError(f"{args.memory} holds no live exemplars: there is nothing to map")
        resolve_method(args.method, live)  # an unknown or unavailable method is refused before any work
        projection = memory_map(memory, args.method)
        labels = map_labels(memory, projection)
        reliability = memory.reliability(args.top_n) if args.colour == "reliability" else None
        deleted = deleted_points(memory, args.method) if args.deleted else None
        name = memory.path.name
    from ..analysis.plots import memory_map_figure

    figure = memory_map_figure(projection, labels, args.colour, reliability, deleted=deleted,
                               title=f"{name}: {len(projection):,} exemplars ({projection.method.upper()}), "
                                     f"coloured by {args.colour}")
    _write_atomically(out, figure.to_html(include_plotlyjs=True, full_html=True))
    shown_deleted = int(len(deleted[0])) if deleted is not None else 0
    if args.json:
        print_json({"out": str(out.resolve()), "method": projection.method, "colour": args.colour,
                    "points": len(projection), "deleted": shown_deleted})
    else:
        print(f"wrote {out}: {len(projection):,} exemplars ({projection.method.upper()}, coloured by {args.colour})"
              + (f" and {shown_deleted} deleted" if shown_deleted else ""))
    return 0


def _write_atomically(path: Path, text: str) -> None:
    """Write beside the target and rename: a reader (or a failed write) never sees half a page."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# --- the parser entries ----------------------------------------------------------------------------------------------
def add_curation_commands(sub, index_uri) -> None:
    """`relabel`, `ls`, `curate` and `map` on the `vmem` parser's subcommands."""
    from ..analysis.curate import DEFAULT_SUGGESTIONS
    from ..analysis.memory_map import METHODS
    from ..voting import DEFAULT_HARD_THRESHOLD, DEFAULT_RELIABILITY_TOP_N, DEFAULT_RULE, EXPLAIN_K, RULES
    from .common import exemplar_id

    p = sub.add_parser("relabel", parents=[index_uri], help="give exemplars a new label (vmem relabel MEM ID... LABEL)")
    p.add_argument("memory")
    p.add_argument("ids", nargs="+", type=exemplar_id, metavar="ID")
    p.add_argument("label", metavar="LABEL")
    p.add_argument("--new", action="store_true",
                   help="allow a label the memory does not have yet (without it, an unknown label is refused: a "
                        "typo would otherwise create a class)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_relabel)

    p = sub.add_parser("neighbour-table", parents=[index_uri],
                       help="build, update or rebuild the neighbour table that reliability, curation and the "
                            "out-of-distribution threshold read, with a progress bar, and save it")
    p.add_argument("memory")
    p.add_argument("--rebuild", action="store_true",
                   help="recompute every row from scratch (resumable: an interrupted rebuild continues), e.g. after "
                        "`vmem tune` or for a table saved before rows had slack; without it, a missing table is "
                        "built and an existing one brought up to date")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_neighbours)

    p = sub.add_parser("ls", parents=[index_uri],
                       help="list exemplars, filtered by label, source, date added and deletion, a page at a time")
    p.add_argument("memory")
    p.add_argument("--label", default=None, help="only this label")
    p.add_argument("--source", default=None, metavar="TEXT", help="only sources (file paths) containing TEXT")
    p.add_argument("--since", type=day_or_time, default=None, metavar="DATE",
                   help="only exemplars added on or after DATE (YYYY-MM-DD or an ISO time; UTC)")
    p.add_argument("--until", type=day_or_time, default=None, metavar="DATE",
                   help="only exemplars added on or before DATE (a bare date includes that whole day)")
    p.add_argument("--deleted", default="live", choices=("live", "only", "all"),
                   help="live exemplars (default), only the deleted ones not yet purged, or all")
    p.add_argument("--limit", type=int, default=50, help="rows per page (default 50)")
    p.add_argument("--offset", type=int, default=0, help="rows to skip: the next page starts at offset + limit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("curate", parents=[index_uri],
                       help="the exemplars most likely mislabelled, with v, the label their neighbours suggest, and "
                            "a score (the Curate page's suggestions)")
    p.add_argument("memory")
    p.add_argument("--limit", type=int, default=DEFAULT_SUGGESTIONS,
                   help=f"suggestions to list (default {DEFAULT_SUGGESTIONS})")
    p.add_argument("--k", type=int, default=EXPLAIN_K, help=f"neighbours that vote the suggested label "
                                                            f"(default {EXPLAIN_K}, as in the app)")
    p.add_argument("--voting", default=DEFAULT_RULE, choices=RULES,
                   help=f"the rule that weighs the neighbours' disagreement and votes the suggested label (default: "
                        f"{DEFAULT_RULE})")
    p.add_argument("--top-n", type=int, default=DEFAULT_RELIABILITY_TOP_N,
                   help="reliability v counts appearances among this many leave-one-out neighbours")
    p.add_argument("--json", action="store_true")
    # no --pruning: curation judges exemplars by v, the very thing pruning acts on (analysis.curate.curation_settings)
    p.set_defaults(func=cmd_curate, pruning="none", threshold=DEFAULT_HARD_THRESHOLD)

    p = sub.add_parser("map", parents=[index_uri],
                       help="the Map page's figure (every exemplar in 2-D) as a standalone plotly HTML file")
    p.add_argument("memory")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the HTML file to write (replaced if it exists)")
    p.add_argument("--method", default="pca", choices=METHODS,
                   help="projection: pca (default, fast) or umap (needs umap-learn)")
    p.add_argument("--colour", default="label", choices=("label", "reliability"),
                   help="colour points by label (default) or by reliability v")
    p.add_argument("--top-n", type=int, default=DEFAULT_RELIABILITY_TOP_N,
                   help="with --colour reliability: v counts appearances among this many leave-one-out neighbours")
    p.add_argument("--deleted", action="store_true", help="also draw deleted exemplars not yet purged (grey crosses)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_map)
