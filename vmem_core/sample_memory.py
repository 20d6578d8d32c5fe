"""The shipped sample memory: built in one piece or not at all, and checked against what was shipped.

A memory folder counts as a memory as soon as its `vmem.json` exists, so a build interrupted halfway (a crash, a
Ctrl+C, a page closed) used to leave a memory that later starts took as complete. The sample is therefore built in a
staging folder beside its destination and renamed into place only when every shipped image is in it: the
destination holds a finished memory or nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .host import process_alive
from .memory import BuildReport, VisualMemory
from .resources import sample_data
from .storage.layout import is_memory

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
_STAGING_PREFIX = ".building-"


@dataclass(frozen=True)
class Completeness:
    """How much of the shipped sample a memory holds (exemplars ever added, deleted ones included; purged ones
    counted as accounted for, since a purge removes their sources with them)."""

    shipped: int
    missing: int
    purged: int = 0

    @property
    def complete(self) -> bool:
        return self.missing == 0

    def explain(self, path: Path) -> str:
        purged = f" ({self.purged} purged since, not counted as missing)" if self.purged else ""
        return (f"{path} holds {self.shipped - self.missing - self.purged} of the {self.shipped} shipped sample "
                f"exemplars{purged}: a build that did not finish. `vmem build {sample_data() / 'memory'} --memory "
                f"{path}` adds the missing ones.")


def _staging_dirs(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}{_STAGING_PREFIX}*"))


def _remove_abandoned_staging(path: Path) -> None:
    """Staging folders of builds whose process is gone (killed mid-build) are deleted; live ones are left alone."""
    for staging in _staging_dirs(path):
        pid_text = staging.name.rsplit(_STAGING_PREFIX, 1)[-1].split("-", 1)[0]
        if not pid_text.isdigit() or not process_alive(int(pid_text)) or int(pid_text) == os.getpid():
            log.info("removing %s, left by a sample build that did not finish", staging)
            shutil.rmtree(staging, ignore_errors=True)


def build_sample_memory(path: Path, progress: Optional[Progress] = None,
                        source: Optional[Path] = None) -> Optional[BuildReport]:
    """Build the sample memory at `path` from the shipped images unless a memory is already there.

    Returns the build's report, or None when `path` already held a memory (or another process finished first).
    """
    path = Path(path)
    source = Path(source) if source is not None else sample_data() / "memory"
    if is_memory(path):
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(path)
    staging = path.with_name(f".{path.name}{_STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with VisualMemory.create(staging) as memory:
            report = memory.exemplars.build(source, progress=progress)
        try:
            # a folder left at `path` without vmem.json (an earlier tool's debris) must not block the sample
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            os.rename(staging, path)
        except OSError:
            if is_memory(path):  # another process (app or demo) finished the same build first
                return None
            raise
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def completeness(memory: VisualMemory, source: Optional[Path] = None) -> Completeness:
    """How many of the shipped sample images `memory` was built from (resumable: `memory.build` adds the rest).

    A purge deletes its exemplars' rows, sources included, so a purged sample image looks like one never added. The
    audit log keeps how many ids each purge removed (not their sources: that would keep what was forgotten), and those
    are taken off the missing count: a memory whose Unlearning demo purged 12 exemplars is not an unfinished build.
    """
    shipped, todo, _ = memory.exemplars.plan_build(Path(source) if source is not None else sample_data() / "memory")
    purged = sum(len(entry.payload().get("ids", [])) for entry in memory.audit.log() if entry.action == "purge")
    accounted = min(purged, len(todo))
    return Completeness(shipped=shipped, missing=len(todo) - accounted, purged=accounted)
