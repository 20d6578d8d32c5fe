"""The `vmem` command line: everything the library does, with one-line errors and progress bars.

Modules: `parser` (the options), `commands` (one function per command), `app` (app and demo), `rerank` (re-ranking
and text queries), `forward` (commands sent to the app that holds a memory), `common` (what they share).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from ..access import READ_ONLY_ENV
from ..errors import MemoryLockedError, VmemError
from .common import EXIT_ERROR, UsageError
from .forward import client_request, device_note, memory_argument, run_in_holder
from .parser import build_parser
from .table import FORWARDED, HOSTABLE, READ_ONLY_COMMANDS

__all__ = ["EXIT_ERROR", "UsageError", "build_parser", "client_request", "main", "run_for_client"]


def _root_calls_errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="vmem: %(message)s",
                        stream=sys.stderr)
    for noisy in ("huggingface_hub", "urllib3", "pymilvus"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # libraries that log through the root logger itself (logging.info(...)) are quietened by a filter on it: a
    # logger's filters see only the records made on it, not those its children (vmem's own loggers) pass up, whereas
    # setting the root logger's level to ERROR would silence every warning vmem gives
    logging.getLogger().addFilter(_root_calls_errors_only)
    for option in ("k", "k_max", "top_n", "threshold", "limit"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    if getattr(args, "rerank_shown", 0) < 0:  # 0 is the paper's query-only ablation: the query alone
        parser.error(f"--rerank-shown must be 0 (the query alone) or more, got {args.rerank_shown}")
    if getattr(args, "device", None) is not None:
        from ..devices import set_default_device

        set_default_device(args.device)  # before anything loads an encoder or an index
    if args.command in READ_ONLY_COMMANDS:
        # commands that only read open the memory read-only, so that closing it writes nothing (not even the index
        # snapshot that a writer would bring up to date)
        args.read_only = True
    return _execute(args)


def _execute(args) -> int:
    """Run a parsed command: errors vmem raises on purpose become one line on stderr and exit status 2."""
    try:
        try:
            return args.func(args)
        except MemoryLockedError as locked:
            return run_in_holder(args, locked)
    except VmemError as exc:
        print(f"vmem: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. piped into `head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("vmem: interrupted; committed changes are kept", file=sys.stderr)
        return 130


def run_for_client(request: dict) -> int:
    """Run a command sent by `vmem` in another process on a memory this process holds; returns its exit status."""
    from ..host import hosted

    command = request.get("command")
    if command not in HOSTABLE:
        print(f"vmem: error: {command!r} cannot be run in the app; accepted: {', '.join(HOSTABLE)}",
              file=sys.stderr)
        return EXIT_ERROR
    if os.environ.get(READ_ONLY_ENV, "") not in ("", "0") and command not in READ_ONLY_COMMANDS:
        print(f"vmem: error: the app holding this memory is read-only: {command!r} is refused; accepted: "
              f"{', '.join(READ_ONLY_COMMANDS)}", file=sys.stderr)
        return EXIT_ERROR
    args = argparse.Namespace(**request, func=FORWARDED[command].run)
    memory = hosted(memory_argument(args))
    if memory is None:
        print(f"vmem: error: {memory_argument(args)} is not the memory this app holds", file=sys.stderr)
        return EXIT_ERROR
    note = device_note(getattr(args, "device", None), memory)
    if note:
        print(note, file=sys.stderr)
    return _execute(args)
