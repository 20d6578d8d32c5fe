"""The fault drill: a memory put through the faults people meet with a folder, and a full disk at every write step.

Where the crash loop (scripts/crashloop.py) kills a process at random points, this drill damages the folder the way a
copy, an archive from someone else, a hand edit or a full disk does, then runs the `vmem` commands a user would run,
in this process (exit statuses as the shell would see them; an exception escaping a command counts as a traceback):

- faults the folder cannot be trusted with (missing database, missing or truncated vault file, edited encoder.dim,
  symbolic links to files outside the memory, someone else's DuckDB file, a truncated database): every command must
  answer one line naming the file, exit 2, and write no byte, inside the memory or outside it;
- faults vmem repairs (an index of another dimension behind a right manifest, an index that marks a live exemplar
  deleted): every command must succeed, and classify must answer as on the undamaged memory;
- a full disk (a small tmpfs, filled to leave 0 bytes up to several MiB free) under each writing command: a command
  that reports failure must have changed nothing (operations reported failed that took effect: must be 0), a command
  that succeeded must have its change kept after the space is freed (acknowledged operations kept), no temporary or
  half-written file may stay behind, and read commands must still work on what is left.

Figures: `python scripts/faultdrill.py --json` (a short run: `--short`). Exit status 1 when any expectation fails.
The full-disk part needs root (to mount a tmpfs); without it that part is skipped and said so.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ENCODER = "test-pixels"  # tests/helpers.py: cheap, and no part of what is checked
LABELS = ("bag", "sneaker", "trouser")
READS = ("stats", "classify", "audit", "audit-verify")
WRITES = ("delete", "add")
FULL_DISK_OPERATIONS = ("add", "delete", "restore", "tune", "purge", "build")
FREE_BYTES = (0, 4096, 32768, 131072, 262144, 524288, 786432, 1048576, 1572864, 2097152, 3145728, 4194304)
SHORT_FREE_BYTES = (0, 262144, 1048576, 4194304)


@dataclass
class Figures:
    commands: int = 0
    exit_codes: dict = field(default_factory=dict)
    tracebacks: int = 0
    multi_line_errors: int = 0
    refusals_not_naming_the_file: int = 0
    bytes_written_outside: int = 0
    read_commands_that_wrote: int = 0
    repaired_answers_wrong: int = 0
    acknowledged_kept: int = 0
    acknowledged_lost: int = 0
    failed_but_took_effect: int = 0
    left_behind: list = field(default_factory=list)
    reads_failing_after_full_disk: int = 0
    full_disk: str = "run"
    problems: list = field(default_factory=list)

    def exit(self, code) -> None:
        self.exit_codes[str(code)] = self.exit_codes.get(str(code), 0) + 1

    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**self.__dict__, "ok": self.ok()}


# --- running a command as the shell would ---------------------------------------------------------------------------
def vmem(*args) -> tuple[object, str]:
    """(exit status or "traceback", stderr) of `vmem ARGS` run in this process."""
    from vmem_core import cli

    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            status = cli.main([str(a) for a in args])
    except SystemExit as exc:
        status = exc.code
    except BaseException:  # noqa: BLE001 - what the drill counts
        return "traceback", err.getvalue() + traceback.format_exc()
    return status, err.getvalue()


def command(name: str, memory: Path, query: Path, data: Path) -> list:
    return {
        "stats": ["stats", memory],
        "classify": ["classify", memory, query, "--k", "3", "--json"],
        "audit": ["audit", memory],
        "audit-verify": ["audit", "verify", memory],
        "delete": ["delete", memory, 1],
        "add": ["add", memory, query, "--label", "bag"],
    }[name]


def tree_state(path: Path) -> dict:
    state = {}
    for item in sorted(Path(path).rglob("*")):
        if item.is_symlink():
            state[str(item.relative_to(path))] = ("link", os.readlink(item))
        elif item.is_file():
            st = item.stat()
            state[str(item.relative_to(path))] = (st.st_size, st.st_mtime_ns, hashlib.sha256(item.read_bytes()).digest())
    return state


def bytes_changed(before: dict, after: dict, root: Path) -> int:
    """Bytes written to the files of `root` (a changed file counts its size; a new one too)."""
    changed = 0
    for name, state in after.items():
        if before.get(name) != state:
            changed += state[0] if isinstance(state[0], int) else 1
    return changed


# --- the memory under test ------------------------------------------------------------------------------------------
def build_base(root: Path) -> tuple[Path, Path, Path]:
    """A memory of 3 labels x 6 sample images: (memory, a query image, the ImageFolder it was built from)."""
    import tests.helpers as helpers  # registers the test encoder
    from vmem_core import VisualMemory

    base = root / "base.vmem"
    for leftover in (root / "data", base):  # a --workdir used before
        shutil.rmtree(leftover, ignore_errors=True)
    data = helpers.sample_folder(root / "data", LABELS, per_label=6)
    with VisualMemory.create(base, encoder=ENCODER) as memory:
        memory.exemplars.build(data)
        memory.exemplars.delete([2])
    query = next((REPO / "data" / "fashion-mnist" / "queries" / "bag").glob("*.png"))
    return base, query, data


def forged_index(memory: Path, dim: int) -> None:
    """An index of `dim`-d vectors behind a manifest that says the memory's dimension (checksums right)."""
    import numpy as np

    from vmem_core.backends.hnsw_index import AnnIndex, IndexParams

    index_dir = memory / "index"
    manifest = json.loads((index_dir / "manifest.json").read_text())
    wrong = AnnIndex(dim, IndexParams())
    vectors = np.random.default_rng(0).normal(size=(manifest["count"], dim)).astype(np.float32)
    wrong.add(np.arange(len(vectors)), vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    shutil.rmtree(index_dir)
    wrong.save_snapshot(index_dir, manifest["applied_seq"])
    forged = json.loads((index_dir / "manifest.json").read_text())
    (index_dir / "manifest.json").write_text(json.dumps({**forged, "dim": manifest["dim"]}))


def marked_live_deleted(memory: Path) -> None:
    from vmem_core import VisualMemory

    with VisualMemory.open(memory) as handle:
        backend = handle.index.backend
        backend.index._index.mark_deleted(5)
        backend.index.save_snapshot(backend.directory, handle.change_counter)


def _link(memory: Path, name: str, outside: Path) -> None:
    target = outside / f"{name}.users-file"
    target.write_bytes((memory / name).read_bytes() + b"the user's own bytes " * 50_000 if (memory / name).exists()
                       else b"the user's own bytes " * 50_000)
    (memory / name).unlink(missing_ok=True)
    (memory / name).symlink_to(target)


def _edit_dim(memory: Path) -> None:
    config = json.loads((memory / "vmem.json").read_text())
    config["encoder"]["dim"] = 16
    (memory / "vmem.json").write_text(json.dumps(config))


def _foreign(memory: Path) -> None:
    import duckdb

    (memory / "memory.duckdb").unlink()
    with duckdb.connect(str(memory / "memory.duckdb")) as con:
        con.execute("CREATE TABLE invoices (id INTEGER, amount DOUBLE); INSERT INTO invoices VALUES (1, 9.5)")


REFUSED = {  # fault -> (what it does to a copy, the file the one-line error must name)
    "missing database": (lambda m, o: (m / "memory.duckdb").unlink(), "memory.duckdb"),
    "missing vectors.f32": (lambda m, o: (m / "vectors.f32").unlink(), "vectors.f32"),
    "truncated vectors.f32": (lambda m, o: os.truncate(m / "vectors.f32", (m / "vectors.f32").stat().st_size // 2),
                              "vectors.f32"),
    "missing thumbs.bin": (lambda m, o: (m / "thumbs.bin").unlink(), "thumbs.bin"),
    "truncated thumbs.bin": (lambda m, o: os.truncate(m / "thumbs.bin", (m / "thumbs.bin").stat().st_size // 2),
                             "thumbs.bin"),
    "edited encoder.dim": (lambda m, o: _edit_dim(m), "vmem.json"),
    "memory.lock linked outside": (lambda m, o: _link(m, "memory.lock", o), "memory.lock"),
    "thumbs.bin linked outside": (lambda m, o: _link(m, "thumbs.bin", o), "thumbs.bin"),
    "vectors.f32 linked outside": (lambda m, o: _link(m, "vectors.f32", o), "vectors.f32"),
    "foreign database": (lambda m, o: _foreign(m), "memory.duckdb"),
    "truncated database": (lambda m, o: os.truncate(m / "memory.duckdb", (m / "memory.duckdb").stat().st_size // 2),
                           "memory.duckdb"),
}
REPAIRED = {
    "wrong-dimension index": lambda m: forged_index(m, 16),
    "index marks a live exemplar deleted": marked_live_deleted,
}


def _answer(out_memory: Path, query: Path) -> object:
    from vmem_core import VisualMemory

    with VisualMemory.open(out_memory, read_only=True) as memory:
        (result,) = memory.classify([query], k=3)
        return result.label, [n.id for n in result.neighbors]


def drill_folder_faults(root: Path, base: Path, query: Path, data: Path, figures: Figures, log) -> None:
    for fault, (damage, name) in REFUSED.items():
        memory, outside = root / "case.vmem", root / "outside"
        shutil.rmtree(memory, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)
        shutil.copytree(base, memory, symlinks=True)
        outside.mkdir()
        damage(memory, outside)
        for step in READS + WRITES:
            before, before_outside = tree_state(memory), tree_state(outside)
            status, err = vmem(*command(step, memory, query, data))
            figures.commands += 1
            figures.exit(status)
            lines = [line for line in err.strip().splitlines() if line]
            if status == "traceback":
                figures.tracebacks += 1
                figures.problems.append(f"{fault}: `{step}` raised {lines[-1] if lines else '?'}")
            elif status != 2 or len(lines) != 1:
                figures.multi_line_errors += status == 2 and len(lines) != 1
                figures.problems.append(f"{fault}: `{step}` exit {status}, {len(lines)} line(s): {err.strip()[:300]}")
            elif name not in lines[0]:
                figures.refusals_not_naming_the_file += 1
                figures.problems.append(f"{fault}: `{step}` does not name {name}: {lines[0]}")
            written_outside = bytes_changed(before_outside, tree_state(outside), outside)
            figures.bytes_written_outside += written_outside
            if written_outside:
                figures.problems.append(f"{fault}: `{step}` wrote {written_outside} bytes outside the memory")
            if tree_state(memory) != before:
                if step in READS:
                    figures.read_commands_that_wrote += 1
                figures.problems.append(f"{fault}: `{step}` changed the memory although it was refused")
        print(f"  {fault}: refused", file=log, flush=True)
    expected = _answer(base, query)
    for fault, damage in REPAIRED.items():
        memory = root / "case.vmem"
        shutil.rmtree(memory, ignore_errors=True)
        shutil.copytree(base, memory, symlinks=True)
        damage(memory)
        for step in READS:
            before = tree_state(memory)
            status, err = vmem(*command(step, memory, query, data))
            figures.commands += 1
            figures.exit(status)
            if status != 0:
                figures.tracebacks += status == "traceback"
                figures.problems.append(f"{fault}: `{step}` exit {status}: {err.strip()[-300:]}")
            if tree_state(memory) != before:
                figures.read_commands_that_wrote += 1
                figures.problems.append(f"{fault}: `{step}` (a read) changed the memory")
        if _answer(memory, query) != expected:
            figures.repaired_answers_wrong += 1
            figures.problems.append(f"{fault}: classify answers differently from the undamaged memory")
        print(f"  {fault}: repaired", file=log, flush=True)


# --- a full disk ----------------------------------------------------------------------------------------------------
def _state(memory: Path) -> dict:
    from vmem_core import VisualMemory

    with VisualMemory.open(memory, read_only=True) as handle:
        frame = handle.exemplars.browse(include_deleted=True, limit=10**9, thumbnails=False)
        return {"rows": {int(r.id): (r.label, r.deleted_at is not None and str(r.deleted_at) != "NaT")
                         for r in frame.itertuples()},
                "ef": handle.index.params.ef_search}


def _took_effect(operation: str, before: dict, after: dict) -> bool:
    rows0, rows1 = before["rows"], after["rows"]
    return {
        "add": len(rows1) > len(rows0),
        "build": len(rows1) > len(rows0),
        "delete": rows1.get(1, ("", False))[1] and not rows0[1][1],
        "restore": not rows1.get(2, ("", True))[1] and rows0[2][1],
        "relabel": rows1.get(4, ("",))[0] == "hat",
        "tune": after["ef"] == 77,
        "purge": 2 not in rows1,
    }[operation]


def _full_disk_command(operation: str, memory: Path, query: Path, data: Path) -> list:
    return {
        "add": ["add", memory, query, "--label", "bag"],
        "build": ["build", data, "--memory", memory, "--encoder", ENCODER],
        "delete": ["delete", memory, 1],
        "restore": ["restore", memory, 2],
        "relabel": ["relabel", memory, 4, "--label", "hat"],
        "tune": ["tune", memory, "--index-ef", 77],
        "purge": ["purge", memory, 2, "--json"],
    }[operation]


def _left_behind(memory: Path) -> list[str]:
    """Files a failed write must not leave: temporaries, rewrite copies, index files no manifest names, a journal, a
    neighbour table's temporary."""
    from vmem_core.storage.layout import ENTRIES, NEIGHBOUR_DIR, NEIGHBOUR_TABLE, PURGE_JOURNAL

    expected = set(ENTRIES) - {PURGE_JOURNAL}  # the folder's own entries (storage.layout), less a pending journal
    left = [p.name for p in memory.iterdir() if p.name not in expected]
    neighbours = memory / NEIGHBOUR_DIR
    if neighbours.is_dir():
        left += [f"{NEIGHBOUR_DIR}/{p.name}" for p in neighbours.iterdir() if p.name != Path(NEIGHBOUR_TABLE).name]
    index = memory / "index"
    if index.is_dir():
        named = json.loads((index / "manifest.json").read_text())["file"] if (index / "manifest.json").exists() \
            else None
        left += [f"index/{p.name}" for p in index.iterdir() if p.name not in ("manifest.json", named)]
    return left


@contextlib.contextmanager
def small_disk(root: Path, megabytes: int):
    mount = root / "disk"
    mount.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount)], check=True,
                   capture_output=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


def _fill(mount: Path, leave: int) -> Path:
    filler = mount / "filler"
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


def drill_full_disk(root: Path, base: Path, query: Path, data: Path, figures: Figures, free_levels, log) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        figures.full_disk = "skipped: mounting a small tmpfs needs root"
        return
    extra = data.parent / "more"  # a build of images the memory does not hold yet
    shutil.rmtree(extra, ignore_errors=True)
    import tests.helpers as helpers

    helpers.sample_folder(extra, LABELS, per_label=9)
    for operation in FULL_DISK_OPERATIONS:
        for leave in free_levels:
            with small_disk(root, 24) as mount:
                memory = mount / "m.vmem"
                shutil.copytree(base, memory)
                before = _state(memory)
                filler = _fill(mount, leave)
                status, err = vmem(*_full_disk_command(operation, memory, query, extra))
                figures.commands += 1
                figures.exit(status)
                # a progress bar left on the line (no newline before the error) is not a second line of the error
                lines = [line[line.find("vmem: error"):] if "vmem: error" in line else line.rsplit("\r", 1)[-1].strip()
                         for line in err.strip().splitlines()]
                lines = [line for line in lines if line and "img/s" not in line and not line.startswith("vmem: warning")
                         and "WARNING" not in line and not line.startswith("vmem: rebuilding")
                         and "not saved" not in line and "could not checkpoint" not in line]
                if status == "traceback":
                    figures.tracebacks += 1
                    figures.problems.append(f"full disk ({leave} B free), {operation}: traceback {lines[-1:]}")
                elif status not in (0, 2) or (status == 2 and len(lines) != 1):
                    figures.multi_line_errors += 1
                    figures.problems.append(f"full disk ({leave} B free), {operation}: exit {status}: {err[:300]}")
                # a pending journal or a full disk must not stop a reader
                read_status, read_err = vmem("stats", memory)
                if read_status != 0:
                    figures.reads_failing_after_full_disk += 1
                    figures.problems.append(f"full disk ({leave} B free), after {operation}: stats exit "
                                            f"{read_status}: {read_err.strip()[-200:]}")
                filler.unlink()
                left = _left_behind(memory)
                if left and status != 0:
                    figures.left_behind.extend(f"{operation} ({leave} B free): {name}" for name in left)
                    figures.problems.append(f"full disk ({leave} B free), {operation}: left {left}")
                after = _state(memory)
                effect = _took_effect(operation, before, after)
                if status == 0:
                    if effect:
                        figures.acknowledged_kept += 1
                    else:
                        figures.acknowledged_lost += 1
                        figures.problems.append(f"full disk ({leave} B free), {operation}: acknowledged, not kept")
                elif effect:
                    figures.failed_but_took_effect += 1
                    figures.problems.append(f"full disk ({leave} B free), {operation}: reported failed, took effect")
        print(f"  full disk under {operation}: {len(free_levels)} free-space levels", file=log, flush=True)


def run(root: Path, short: bool, log=sys.stderr) -> Figures:
    import logging

    logging.getLogger("vmem_core").setLevel(logging.ERROR)  # warnings are expected here; the figures tell
    figures = Figures()
    base, query, data = build_base(root)
    drill_folder_faults(root, base, query, data, figures, log)
    drill_full_disk(root, base, query, data, figures, SHORT_FREE_BYTES if short else FREE_BYTES, log)
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="fewer free-space levels on the full disk")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vmem-faultdrill-") as temp:
        root = args.workdir or Path(temp)
        root.mkdir(parents=True, exist_ok=True)
        figures = run(root, args.short)
    result = {**figures.to_dict(), "seconds": round(time.monotonic() - started, 1)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['commands']} commands; exit codes {result['exit_codes']}; tracebacks {result['tracebacks']}; "
              f"bytes written outside the memory {result['bytes_written_outside']}; read commands that wrote "
              f"{result['read_commands_that_wrote']}; full disk ({result['full_disk']}): acknowledged kept "
              f"{result['acknowledged_kept']}, acknowledged lost {result['acknowledged_lost']}, reported failed "
              f"but took effect {result['failed_but_took_effect']}, left behind {len(result['left_behind'])}")
        for problem in result["problems"]:
            print(f"  problem: {problem}")
    return 0 if figures.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
