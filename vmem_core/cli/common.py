"""What every command shares: the one-line error, progress bars on stderr, JSON on stdout, opening a memory (or
borrowing the one this process holds for a client), and argument types."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..errors import VmemError

EXIT_ERROR = 2


class UsageError(VmemError):
    pass


def vote_settings(args):
    """The parsed --k, --voting, --pruning, --threshold and --top-n as one VoteSettings (BadSettingError, a
    VmemError, names a bad value)."""
    from ..voting import VoteSettings

    return VoteSettings(k=args.k, rule=args.voting, pruning=args.pruning, threshold=args.threshold, top_n=args.top_n)


def progress_bar(description: str, enabled: bool = True):
    """A tqdm bar on stderr, as a progress(done, total) callback; stdout stays clean for --json."""
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm  # on first progress: a command that reports none never imports it

            from ..host import serving_a_client

            bar = tqdm(total=total, desc=description, unit="img", file=sys.stderr,
                       disable=not enabled or serving_a_client(), leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def expand_images(paths: Sequence[str]) -> list[Path]:
    """Files as given; directories expanded to the images inside them (recursively, sorted)."""
    from ..ingest.images import is_image_path

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


def exemplar_id(text: str) -> int:
    """An exemplar id as argparse type: a non-negative integer that fits the database's BIGINT."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an exemplar id (a whole number)") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"{text} is not an exemplar id (ids are 0 .. 2^63-1)")
    return value


def device_spec(text: str) -> str:
    """--device as argparse type: auto, cpu, cuda or cuda:N, in canonical spelling."""
    from ..devices import DeviceError, parse_device

    try:
        return parse_device(text)
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_exemplar_id(text: str) -> int:
    """`exemplar_id` for a command that reads its ids itself: a bad one is a usage error."""
    try:
        return exemplar_id(text)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(str(exc)) from None


def print_json(payload) -> None:
    """`payload` as strict JSON: a value that is not a number (NaN, infinity: e.g. a fit over one memory size) is
    null, never the bare NaN that JSON parsers other than Python's refuse."""
    json.dump(_finite(payload), sys.stdout, indent=2, default=str, allow_nan=False)
    sys.stdout.write("\n")


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


class _Borrowed:
    """A hosted memory lent to one command: changes are named after the CLI, and the end of the command leaves
    the memory open for its holder."""

    def __init__(self, memory) -> None:
        from ..storage.audit import default_actor

        self.memory = memory
        self._acting = memory.audit.acting_as(default_actor("cli through app"))

    def __enter__(self):
        self._acting.__enter__()
        return self.memory

    def __exit__(self, *exc) -> None:
        self._acting.__exit__(*exc)


def open_memory(args, encoder: Optional[str] = None, create: bool = False):
    """The memory named by args.memory: the handle this process holds for a client, else opened (or created)."""
    from ..host import hosted
    from ..backends import DEFAULT_BACKEND
    from ..memory import VisualMemory, check_encoder_fits
    from ..storage.audit import default_actor

    encoder = encoder or getattr(args, "encoder", None)
    held = hosted(args.memory)
    if held is not None:
        check_encoder_fits(args.memory, held.config, encoder)  # as an open would: the same weights, by fingerprint
        if create:
            check_index_params(args, held)
        return _Borrowed(held)
    index_uri = getattr(args, "index_uri", None)
    if create:
        memory = VisualMemory.open_or_create(args.memory, encoder=encoder,
                                             backend=getattr(args, "backend", DEFAULT_BACKEND),
                                             index_uri=index_uri, index_params=index_params(args))
        try:
            check_index_params(args, memory)
        except UsageError:
            memory.close()
            raise
    else:
        memory = VisualMemory.open(args.memory, encoder=encoder, index_uri=index_uri,
                                   read_only=getattr(args, "read_only", False))
    memory.audit.actor = default_actor("cli")
    return memory


_INDEX_OPTIONS = {"M": "--index-m", "ef_construction": "--index-ef-construction", "ef_search": "--index-ef"}


def index_params(args):
    """The index parameters a new memory gets: IndexParams' defaults, with the --index-* options given."""
    from dataclasses import replace

    from ..backends.hnsw_index import IndexParams

    from ..backends.hnsw_index import INDEX_LIMITS

    given = {field: getattr(args, field) for field in _INDEX_OPTIONS if getattr(args, field, None) is not None}
    for field, value in given.items():
        if not 1 <= value <= INDEX_LIMITS[field]:
            raise UsageError(f"{_INDEX_OPTIONS[field]} {value}: must be a positive integer, at most "
                             f"{INDEX_LIMITS[field]:,}")
    return replace(IndexParams(), **given)


def check_index_params(args, memory) -> None:
    """An existing memory keeps the graph it was built with: refuse --index-* values that differ from it."""
    built = memory.index.params
    differing = [f"{option} {getattr(args, field)} (this memory has {getattr(built, field)})"
                 for field, option in _INDEX_OPTIONS.items()
                 if getattr(args, field, None) is not None and getattr(args, field) != getattr(built, field)]
    if differing:
        raise UsageError(f"memory {args.memory} already exists and its index graph is fixed: {'; '.join(differing)}. "
                         "Leave the options out, or build a new memory; the search beam alone changes with "
                         f"`vmem tune {args.memory} --index-ef N`")


def sample_summary(size: int, total: int, seed: int) -> Optional[dict]:
    """eval --json's "sample": which part of the queries --limit evaluated, or None when it took them all."""
    return {"size": size, "of": total, "seed": seed} if size < total else None


def sample_note(sample: Optional[dict]) -> str:
    """What eval's text output says after the number of queries when --limit evaluated only some of them."""
    return f" (a random sample of {sample['size']} of {sample['of']}, seed {sample['seed']})" if sample else ""

