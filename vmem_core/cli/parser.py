"""The `vmem` argument parser: every command, its options and their defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from .app import DEV_VARIABLE, cmd_app, cmd_demo
from .commands import (
    cmd_add,
    cmd_attribute,
    cmd_audit,
    cmd_build,
    cmd_classify,
    cmd_delete,
    cmd_eval,
    cmd_migrate,
    cmd_purge,
    cmd_restore,
    cmd_search_text,
    cmd_stats,
    cmd_tune,
)
from .common import device_spec, exemplar_id


def build_parser() -> argparse.ArgumentParser:
    from ..backends import BACKENDS, DEFAULT_BACKEND
    from ..encoders import DEFAULT_ENCODER
    from ..voting import (
        DEFAULT_HARD_THRESHOLD,
        DEFAULT_K,
        DEFAULT_PRUNING,
        DEFAULT_RELIABILITY_TOP_N,
        DEFAULT_RULE,
        EXPLAIN_K,
        PRUNING_MODES,
        RULES,
    )
    from .rerank import add_rerank_options

    parser = argparse.ArgumentParser(prog="vmem", description="A visual memory you can see into and edit.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what vmem does")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def voting_options(p):
        # read back as one VoteSettings by cli.common.vote_settings
        p.add_argument("--voting", default=DEFAULT_RULE, choices=RULES, help=f"voting rule (default: {DEFAULT_RULE})")
        p.add_argument("--pruning", default=DEFAULT_PRUNING, choices=PRUNING_MODES,
                       help="skip (hard) or down-weight (soft) unreliable exemplars")
        p.add_argument("--threshold", type=float, default=DEFAULT_HARD_THRESHOLD,
                       help=f"hard pruning skips exemplars with v >= this (default {DEFAULT_HARD_THRESHOLD:g})")
        p.add_argument("--top-n", type=int, default=DEFAULT_RELIABILITY_TOP_N,
                       help="reliability v counts appearances among this many leave-one-out neighbours")

    device = argparse.ArgumentParser(add_help=False)
    device.add_argument("--device", type=device_spec, default=None, metavar="auto|cpu|cuda[:N]",
                        help="where images are encoded and an exact index searches (default: $VMEM_DEVICE, else "
                             "auto: the first CUDA GPU torch sees, else the CPU); the memory itself does not change")

    index_uri = argparse.ArgumentParser(add_help=False)
    index_uri.add_argument("--index-uri", default=None, metavar="URI",
                           help="a Milvus memory's server (e.g. http://host:19530; token in $VMEM_MILVUS_TOKEN), "
                                "overriding the one it records")

    p = sub.add_parser("build", parents=[index_uri, device],
                       help="create or extend a memory from an ImageFolder directory or a path,label CSV")
    p.add_argument("data", help="DIR/<label>/<image> or a CSV with columns path,label")
    p.add_argument("--memory", required=True, help="memory directory (created if missing)")
    p.add_argument("--encoder", default=None,
                   help=f"encoder for a new memory (default: {DEFAULT_ENCODER}): efficientnet-lite0, "
                        "efficientnet-lite1, efficientnet-lite2, open_clip:<arch>:<tag or checkpoint path> or "
                        "timm:<arch>:<tag or checkpoint path>")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help="index of a new memory: hnswlib (embedded, default), milvus (embedded milvus-lite, or the "
                        "server given by --index-uri) or exact (every vector scored on --device; on a GPU, faster "
                        "than hnswlib and never approximate for any memory that fits in its memory)")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local (this process) or ray (Ray Data: a local Ray instance, or --ray-address)")
    p.add_argument("--ray-address", default=None, help="Ray cluster to run on (e.g. ray://head:10001 or auto)")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image instead of skipping it (a memory this build created is "
                        "removed if nothing was added; otherwise kept, and a rerun goes on)")
    p.add_argument("--index-m", dest="M", type=int, default=None,
                   help="a new memory's HNSW graph degree M (default 16; bench/search.py shows the trade-off)")
    p.add_argument("--index-ef-construction", dest="ef_construction", type=int, default=None,
                   help="a new memory's HNSW build beam (default 200; lower builds faster, with lower recall)")
    p.add_argument("--index-ef", dest="ef_search", type=int, default=None,
                   help="a new memory's HNSW search beam (default 128; at least k is used)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("migrate",
                       help="move a memory's index to another backend (hnswlib, Milvus or exact), rebuilt from its "
                            "database")
    p.add_argument("memory")
    p.add_argument("--to", required=True, choices=BACKENDS, help="the backend to move to")
    p.add_argument("--index-uri", dest="target_uri", default=None, metavar="URI",
                   help="with --to milvus: the Milvus server to move to (e.g. http://host:19530); without it, Milvus "
                        "runs embedded in the memory folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("add", parents=[index_uri, device], help="add images (files or folders) under one label")
    p.add_argument("memory")
    p.add_argument("images", nargs="+")
    p.add_argument("--label", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_add)

    for name, func, text in (("delete", cmd_delete, "tombstone exemplars by id (undo with restore)"),
                             ("restore", cmd_restore, "bring back deleted exemplars")):
        p = sub.add_parser(name, parents=[index_uri], help=text)
        p.add_argument("memory")
        p.add_argument("ids", nargs="+", type=exemplar_id, metavar="ID")
        p.set_defaults(func=func)
        if name == "delete":
            from ..memory import NEAR_DUPLICATE_DISTANCE

            p.add_argument("--duplicate-distance", type=float, default=NEAR_DUPLICATE_DISTANCE,
                           help="warn of live exemplars closer than this to a deleted one")

    p = sub.add_parser("purge", parents=[index_uri],
                       help="remove exemplars physically, with a certificate of the checks "
                            "(vmem purge MEM ID...), or check a certificate (vmem purge verify CERT MEM)")
    p.add_argument("memory", metavar="MEM | verify")
    p.add_argument("ids", nargs="*", metavar="ID | CERT MEM")  # ids are checked by cmd_purge (verify takes paths)
    p.add_argument("--all", action="store_true", help="purge every tombstoned exemplar")
    p.add_argument("--live", action="store_true", help="also purge the given ids that are live (not deleted first)")
    p.add_argument("--certificate", default=None, metavar="PATH",
                   help="write the certificate (with the salts and digests that prove what was removed) to PATH, "
                        "outside the memory folder; a new file (an existing one is never overwritten)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_purge, verify_certificate=None)

    p = sub.add_parser("audit", parents=[index_uri],
                       help="show the hash-chained audit log (vmem audit MEM), or check it (vmem audit verify MEM)")
    p.add_argument("words", nargs="+", metavar="[verify] MEM")
    p.add_argument("--limit", type=int, default=50, help="entries to show (newest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("classify", parents=[index_uri, device], help="classify images by their nearest exemplars")
    p.add_argument("memory")
    p.add_argument("images", nargs="+")
    p.add_argument("--k", type=int, default=DEFAULT_K)
    voting_options(p)
    p.add_argument("--show", type=int, default=5, help="neighbours to print per image (text output)")
    p.add_argument("--zero-shot", action="store_true",
                   help="also score each label by its name (CLIP encoders only): see vmem search-text")
    p.add_argument("--json", action="store_true")
    add_rerank_options(p, batch=False)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("eval", parents=[index_uri, device],
                       help="accuracy of every rule at every k on a labelled query folder or CSV")
    p.add_argument("memory")
    p.add_argument("queries")
    from ..analysis.registry import EXPERIMENTS, ExperimentOptions

    defaults = ExperimentOptions()
    p.add_argument("--k-max", type=int, default=defaults.k_max)
    voting_options(p)
    p.add_argument("--json", action="store_true")
    group = p.add_argument_group("experiments (exact search once, every rule and k from it)")
    group.add_argument("--experiment", action="append", choices=(*EXPERIMENTS, "all"),
                       help="run one of the paper's experiments instead of the plain evaluation (repeatable)")
    group.add_argument("--k", type=int, default=defaults.vote.k, help="the fixed k reported beside best-over-k")
    group.add_argument("--sizes", type=int, nargs="+", default=list(defaults.sizes),
                       help="exemplars per class, each at least 1; a size above the largest class is run at the "
                            "largest, with a note")
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

    p = sub.add_parser("attribute", parents=[index_uri, device],
                       help="which exemplars drove predictions, and what each prediction would be without each of them")
    p.add_argument("memory")
    p.add_argument("images", nargs="*")
    p.add_argument("--queries", default=None, help="labelled folder or CSV: per-exemplar influence over it")
    p.add_argument("--k", type=int, default=EXPLAIN_K)
    voting_options(p)
    p.add_argument("--show", type=int, default=10, help="rows to print (text output)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_attribute)

    from .curation import add_curation_commands

    add_curation_commands(sub, index_uri)

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

    p = sub.add_parser("app", parents=[device], help="start the Streamlit app")
    p.add_argument("memory", nargs="?", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--address", default="127.0.0.1",
                   help="interface to serve on (default: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--headless", action="store_true", help="do not open a browser (one opens only where a display is)")
    p.add_argument("--dev", action="store_true",
                   help=f"reload pages when their files change (Streamlit's file watcher; or set ${DEV_VARIABLE}=1)")
    p.add_argument("--rerank", metavar="SPEC", default=None,
                   help="offer 'Ask the model' on the Classify page (gemini:<model> or openai:<base-url>:<model>)")
    p.add_argument("--read-only", action="store_true",
                   help="everyone is a viewer: classify, browse and evaluate, never change the memory")
    p.add_argument("--auth-file", default=None, metavar="PATH",
                   help='sign-in for viewers and editors: JSON {"editor": [HASH...], "viewer": [HASH...]} '
                        "(required on a non-loopback --address unless --read-only or $VMEM_EDITOR_PASSWORD is set)")
    p.add_argument("--hash-password", action="store_true",
                   help="read a password or token (from the terminal, or stdin) and print its hash for --auth-file")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("demo", parents=[device], help="build the shipped sample memory, classify sample queries, open the app")
    p.add_argument("--memory", default=None,
                   help="where the sample memory goes (default: sample.vmem in a checkout, else in the user's data "
                        "folder, or $VMEM_HOME)")
    p.add_argument("--k", type=int, default=EXPLAIN_K)
    p.add_argument("--no-app", action="store_true", help="stop after the printed summary")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--headless", action="store_true", help="do not open a browser (one opens only where a display is)")
    p.add_argument("--dev", action="store_true", help="reload pages when their files change")
    p.set_defaults(func=cmd_demo)
    return parser

