"""Transparent huge pages for the index's memory: the largest single speed-up of search and build at scale.

hnswlib keeps every vector and its links in one malloc'd block and reads it at random. With 4 KiB pages a 1M x 512
index (2-4 GB) misses the TLB on nearly every hop of a search; with 2 MiB pages it does not. On this project's machines
the kernel gives huge pages only to memory that asks for them (`/sys/kernel/mm/transparent_hugepage/enabled` is
`madvise`): numpy asks for its large arrays, hnswlib does not. Measured (bench/search.py, 1M x 512, M 24): single
queries 1.05-1.30x faster at the same recall in one process (1.5x between separate runs), builds 1.16-1.28x faster.

So around each hnswlib call that allocates (init, resize, load) we note the large anonymous mappings that the call
created (glibc serves blocks of 32 MiB and more with a mapping of their own) and `madvise(MADV_HUGEPAGE)` them:
pages touched from then on come as huge pages. Where the call has already touched them (resize, which moves the
block), `MADV_COLLAPSE` (Linux 6.1+) remaps them as huge pages at once. After a load it is not done at once (it cost
more than the load itself: 1.2-2.5 s at 60,000 x 1280, for searches ~1.2x faster): a long-lived process (the app)
collapses the loaded block in a background thread (`collapse`), a short-lived one (a CLI command) does not. Only the call's own mappings are touched:
other allocators' memory (DuckDB, Arrow, the encoder) keeps whatever paging it chose. Both only change how memory is
mapped, never its contents, and every failure (another OS, an old kernel, THP switched off, a mapping gone in between)
leaves things as they were.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Iterator

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
HUGE_PAGE = 2 * 1024 * 1024
# Smaller mappings gain little and are mostly the allocator's and Python's own; hnswlib's block passes this from about
# 15,000 vectors of 512 dimensions (6,000 of 1280), where search time starts to matter.
MIN_MAPPING_BYTES = 32 * 1024 * 1024
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@dataclass(frozen=True)
class Advice:
    """What one call did: bytes advised, and bytes collapsed to huge pages now (0 unless asked and supported); the
    advised ranges, for a `collapse` later."""

    advised: int = 0
    collapsed: int = 0
    ranges: tuple[tuple[int, int], ...] = ()


def thp_mode() -> str:
    """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), or 'unavailable'."""
    try:
        text = THP_SETTING.read_text()
    except OSError:
        return "unavailable"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "unavailable"


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    return libc


def anonymous_mappings() -> set[tuple[int, int]]:
    """(start, end) of this process's private read-write anonymous mappings (the heap excluded)."""
    out = set()
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) == 5 and parts[1] == "rw-p":
            low, high = (int(x, 16) for x in parts[0].split("-"))
            out.add((low, high))
    return out


def whole_huge_pages(mappings: Iterable[tuple[int, int]], min_bytes: int = MIN_MAPPING_BYTES) -> list[tuple[int, int]]:
    """The mappings of at least `min_bytes`, cut to whole huge pages (a partial one at either end cannot be huge)."""
    out = []
    for low, high in sorted(mappings):
        low = (low + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        high &= ~(HUGE_PAGE - 1)
        if high - low >= min_bytes:
            out.append((low, high))
    return out


def advise_huge_pages(mappings: Iterable[tuple[int, int]], collapse: bool = False,
                      min_bytes: int = MIN_MAPPING_BYTES) -> Advice:
    """Ask for huge pages on the large ones of `mappings`; with `collapse`, also turn their pages touched so far into
    huge pages now. Returns what was done; never raises."""
    if thp_mode() not in ("always", "madvise"):
        return Advice()
    libc = _libc()
    if libc is None:
        return Advice()
    advised = collapsed = 0
    ranges = []
    for low, high in whole_huge_pages(mappings, min_bytes):
        if libc.madvise(low, high - low, MADV_HUGEPAGE) == 0:
            advised += high - low
            ranges.append((low, high))
            # collapsing fails for 2 MiB stretches never touched (EINVAL): the rest is still collapsed
            if collapse and libc.madvise(low, high - low, MADV_COLLAPSE) == 0:
                collapsed += high - low
    return Advice(advised, collapsed, tuple(ranges))


# A later collapse goes this many bytes at a time, so that whoever must wait for it (a writer that would move the
# block) waits for one step (~10 ms), not for the whole index.
COLLAPSE_STEP = 16 * HUGE_PAGE


def collapse(ranges: Iterable[tuple[int, int]], step_guard: Callable[[], ContextManager[bool]],
             step: int = COLLAPSE_STEP, pause: float = 0.0) -> int:
    """`MADV_COLLAPSE` advised `ranges` (from an Advice) `step` bytes at a time, each step inside `step_guard()`,
    which yields False once the memory may have moved or gone (then nothing more is done), `pause` seconds between
    steps. Returns the bytes collapsed; never raises for the kernel's refusals. For a long-lived process, in a thread
    of its own: collapsing 60,000 x 1280 takes ~1.2-2.5 s of CPU, which a load that waited for it paid on the
    critical path."""
    libc = _libc()
    if libc is None or thp_mode() not in ("always", "madvise"):
        return 0
    done = 0
    for low, high in ranges:
        for at in range(low, high, step):
            if at > low and pause:
                time.sleep(pause)
            with step_guard() as still_ours:
                if not still_ours:
                    return done
                if libc.madvise(at, min(step, high - at), MADV_COLLAPSE) == 0:
                    done += min(step, high - at)
    return done


@contextmanager
def huge_pages_for_new_mappings(collapse: bool = False) -> Iterator[list[Advice]]:
    """Advise (and with `collapse`, collapse) the large anonymous mappings created inside the block; the list it
    yields receives the Advice on exit."""
    before = anonymous_mappings()
    result: list[Advice] = []
    yield result
    result.append(advise_huge_pages(new_address_ranges(before, anonymous_mappings()), collapse=collapse))


def new_address_ranges(before: Iterable[tuple[int, int]], after: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `after`'s mappings that no mapping of `before` covered: the kernel merges a new mapping with an
    adjacent old one of the same kind, so a new (start, end) may hold old memory that is not ours to advise."""
    old = sorted(before)
    out = []
    for low, high in sorted(after):
        cursor = low
        for old_low, old_high in old:
            if old_high <= cursor or old_low >= high:
                continue
            if old_low > cursor:
                out.append((cursor, old_low))
            cursor = max(cursor, old_high)
        if cursor < high:
            out.append((cursor, high))
    return out


def huge_page_bytes() -> int:
    """Bytes of this process's anonymous memory now backed by transparent huge pages (for tests and benches)."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
