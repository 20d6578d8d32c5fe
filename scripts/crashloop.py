"""Crash loop: kill a process that is changing a memory at random moments, reopen the memory, check it.

    python scripts/crashloop.py --kills 200 [--seed 1] [--workdir DIR] [--max-delay 0.6] [--json]

Each round starts a child process (forked from a server that has already imported vmem, so a round costs no
interpreter start) that opens the memory and runs add, delete, restore, relabel, purge, build, migrate (the index
between hnswlib and embedded Milvus, where milvus-lite is installed) and snapshot operations, mostly of one kind per round so that kills are spread over all of them. Before each operation the child
appends its intent to a log file and after it returns an acknowledgement, both fsynced. The parent SIGKILLs the
child after a random delay (sometimes before it has even finished opening the memory), reopens the memory and checks:

- while the child holds the memory (in some rounds, just before the kill), another process cannot open it, even
  after the purges and migrations that rewrote its files;
- the memory opens, and an interrupted purge has been finished (no journal left);
- the index, the label table and the database hold the same live ids;
- every acknowledged operation is there, and the operation that was running when the kill came is either wholly
  applied or not at all (rows, labels and states compared with a model replayed from the log);
- purged exemplars' embeddings are zeros in the vault, and no file of the memory holds their bytes;
- the audit chain verifies; queries answer (each probed exemplar is its own nearest neighbour, a search for every
  live exemplar returns exactly them).

It stops at the first inconsistency (exit status 1) and prints kills per operation. The memory uses the cheap
`test-pixels` encoder of tests/helpers.py: the encoder plays no part in what is checked.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OPERATIONS = ("add", "delete", "restore", "relabel", "purge", "build", "migrate", "snapshot")
# A migration takes seconds where the others take milliseconds: drawn at random it would swallow most kills meant
# for the other operations, so it runs only in the rounds that focus on it.
RANDOM_OPERATIONS = tuple(op for op in OPERATIONS if op != "migrate")
LABELS = ("c0", "c1", "c2", "c3", "c4")
ENCODER = "test-pixels"
MAX_BUILD_IMAGES = 8  # below vmem_core.memory.BUILD_CHUNK: each build is one transaction, applied whole or not at all
SIZE_CAP = 400  # rows: above this the child deletes and purges more than it adds, so rounds stay quick
PRELOAD = ["numpy", "duckdb", "hnswlib", "PIL.Image", "pandas", "vmem_core.memory", "vmem_core.unlearn",
           "tests.helpers"]


# --- the child --------------------------------------------------------------------------------------------------------
def _random_png(rng: random.Random) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (12, 12), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def child_main(path: str, log_path: str, focus: str, seed: int, round_no: int) -> None:
    """Run operations on the memory until killed, logging intents and acknowledgements durably."""
    import tests.helpers  # noqa: F401 - registers the test-pixels encoder
    from vmem_core import VisualMemory
    from vmem_core.unlearn import purge

    log = open(log_path, "a")

    def note(record: dict) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()
        os.fsync(log.fileno())

    rng = random.Random(seed)
    memory = VisualMemory.open(path)
    note({"ready": True})
    can_migrate = _milvus_installed()
    for n in range(10_000):
        live = memory.table.ids.tolist()
        deleted = memory.exemplars.tombstoned_ids()
        op = focus if rng.random() < 0.7 else rng.choice(RANDOM_OPERATIONS)
        if len(live) + len(deleted) > SIZE_CAP and op in ("add", "build"):
            op = "purge" if deleted else "delete"
        if op == "restore" and not deleted:
            op = "delete"
        if op == "purge" and not deleted:
            op = "delete"
        if op in ("delete", "relabel") and not live:
            op = "add"
        if op == "migrate" and not can_migrate:
            op = "snapshot"
        intent: dict = {"op": op, "n": n}
        if op == "add":
            count = rng.randint(1, 4)
            intent.update(label=rng.choice(LABELS), sources=[f"add-{round_no}-{n}-{j}" for j in range(count)])
            note(intent)
            ids = memory.exemplars.add([_random_png(rng) for _ in range(count)], intent["label"],
                                       sources=intent["sources"])
            note({"ack": n, "ids": ids})
        elif op == "build":
            folder = Path(log_path).parent / f"build-{round_no}-{n}"
            labels = [rng.choice(LABELS) for _ in range(rng.randint(2, MAX_BUILD_IMAGES))]
            sources = [f"{label}/b{round_no}-{n}-{j}.png" for j, label in enumerate(labels)]
            for source in sources:
                (folder / source).parent.mkdir(parents=True, exist_ok=True)
                (folder / source).write_bytes(_random_png(rng))
            intent.update(sources=sources, labels=labels)
            note(intent)
            memory.exemplars.build(folder, workers=1)
            rows = memory.exemplars.browse(include_deleted=True, limit=10**9, thumbnails=False)
            note({"ack": n, "ids": [[int(i), s] for i, s in zip(rows["id"], rows["source"]) if s in set(sources)]})
        elif op in ("delete", "restore", "relabel", "purge"):
            pool = deleted if op in ("restore", "purge") else live + (deleted if op == "relabel" else [])
            ids = sorted(rng.sample(pool, min(len(pool), rng.randint(1, 3))))
            intent.update(ids=ids)
            if op == "relabel":
                intent.update(label=rng.choice(LABELS))
            note(intent)
            if op == "delete":
                memory.exemplars.delete(ids)
            elif op == "restore":
                memory.exemplars.restore(ids)
            elif op == "relabel":
                memory.exemplars.relabel(ids, intent["label"])
            else:
                certificate = purge(memory, ids)
                if not certificate.passed:
                    note({"failed": n, "why": certificate.explain()})
            note({"ack": n})
        elif op == "migrate":
            intent.update(to="hnswlib" if memory.index.backend.describe()["name"] == "milvus" else "milvus")
            note(intent)
            memory.index.move(intent["to"])
            note({"ack": n})
        else:
            note(intent)
            memory.index.flush()
            note({"ack": n})


def _milvus_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("milvus_lite") is not None and importlib.util.find_spec("pymilvus") is not None


# --- the parent -------------------------------------------------------------------------------------------------------
@dataclass
class Exemplar:
    label: str
    deleted: bool


@dataclass
class Figures:
    kills: Counter = field(default_factory=Counter)  # operation running at the kill
    applied: Counter = field(default_factory=Counter)  # of those, how many were found wholly applied
    acknowledged: int = 0  # operations acknowledged by children, all verified
    recoveries: Counter = field(default_factory=Counter)  # what reopening had to do, from vmem's log
    known_vectors: dict = field(default_factory=dict)  # id -> float32 bytes, to look for after it is purged
    refused_while_held: int = 0  # opens by the parent that the child's owner lock refused, as it must
    inconsistencies: list = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"kills": sum(self.kills.values()), "kills_per_operation": dict(sorted(self.kills.items())),
                "in_flight_found_applied": dict(sorted(self.applied.items())),
                "acknowledged_operations_verified": self.acknowledged,
                "recoveries_on_open": dict(sorted(self.recoveries.items())),
                "opens_refused_while_held": self.refused_while_held,
                "inconsistencies": self.inconsistencies, "seconds": round(self.seconds, 1)}


def _log_bytes(path: Path) -> bytes:
    """A child's log as written so far; b"" before the child has created it (checking first and reading after
    raced the child's start: the crash loop died reading a log that did not exist yet)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _read_log(path: Path) -> list[dict]:
    records = []
    for line in _log_bytes(path).decode(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break  # a line cut by the kill: it was never acknowledged as written
    return records


def _actual_state(memory) -> tuple[dict[int, Exemplar], dict[str, int]]:
    import pandas as pd

    rows = memory.exemplars.browse(include_deleted=True, limit=10**9, thumbnails=False)
    state = {int(r.id): Exemplar(str(r.label), not pd.isna(r.deleted_at)) for r in rows.itertuples()}
    return state, {str(s): int(i) for i, s in zip(rows["id"], rows["source"])}


def _apply(model: dict[int, Exemplar], record: dict, ids: list[int]) -> dict[int, Exemplar]:
    """The model after one operation (new ids of an add or build given by `ids`)."""
    model = {i: Exemplar(e.label, e.deleted) for i, e in model.items()}
    op = record["op"]
    if op == "add":
        model.update({i: Exemplar(record["label"], False) for i in ids})
    elif op == "build":
        by_source = dict(zip(record["sources"], record["labels"]))
        model.update({i: Exemplar(by_source[s], False) for i, s in ids})
    elif op in ("delete", "restore"):
        for i in record["ids"]:
            model[i].deleted = op == "delete"
    elif op == "relabel":
        for i in record["ids"]:
            model[i].label = record["label"]
    elif op == "purge":
        for i in record["ids"]:
            model.pop(i, None)
    return model  # migrate and snapshot change no row


def _describe(expected: dict[int, Exemplar], actual: dict[int, Exemplar]) -> str:
    diff = [f"id {i}: expected {expected.get(i)}, found {actual.get(i)}"
            for i in sorted(set(expected) | set(actual)) if expected.get(i) != actual.get(i)]
    return "; ".join(diff[:5]) + (f" (+{len(diff) - 5} more)" if len(diff) > 5 else "")


def check_memory(path: Path, model: dict[int, Exemplar], records: list[dict], purged: set[int],
                 figures: Figures, snapshot: bool) -> tuple[Optional[str], dict[int, Exemplar], str]:
    """Reopen the memory after a kill and compare it with the model advanced by the round's log.

    Returns (the first inconsistency or None, the model now, the operation that was in flight). `snapshot`: close
    the memory properly (an index snapshot is written), else leave the snapshot behind for the next round."""
    from vmem_core import VisualMemory
    from vmem_core.unlearn import byte_scan

    # a read-only open leaves an interrupted purge to the next writer: open for writing when one is pending
    journal_pending = (path / "purge.journal.json").exists()
    memory = VisualMemory.open(path, read_only=not snapshot and not journal_pending)
    try:
        if (path / "purge.journal.json").exists():
            return "purge journal left after open", model, "?"
        actual, source_ids = _actual_state(memory)
        intents = {r["n"]: r for r in records if "op" in r}
        in_flight = "open"
        for record in records:
            if "ready" in record:
                in_flight = "between operations"
            elif "op" in record:
                in_flight = record["op"]
                pending = record
            elif "failed" in record:
                return f"purge certificate failed: {record['why']}", model, in_flight
            elif "ack" in record:
                done = intents[record["ack"]]
                ids = record.get("ids", [])
                if done["op"] == "build" and sorted(s for _, s in ids) != sorted(done["sources"]):
                    return f"a build returned without adding all of {done['sources']}", model, in_flight
                model = _apply(model, done, ids)
                if done["op"] == "purge":
                    purged.update(done["ids"])
                figures.acknowledged += 1
                in_flight = "between operations"
        if in_flight in OPERATIONS and in_flight not in ("snapshot", "migrate"):
            new_ids = []
            if pending["op"] in ("add", "build"):
                # an add, and a build of at most MAX_BUILD_IMAGES, is one transaction: all its sources or none
                present = [s for s in pending["sources"] if s in source_ids]
                if 0 < len(present) < len(pending["sources"]):
                    return (f"{in_flight} killed midway is half-applied: {len(present)} of its "
                            f"{len(pending['sources'])} images are in the memory"), model, in_flight
                new_ids = [source_ids[s] if pending["op"] == "add" else (source_ids[s], s) for s in present]
            applied = _apply(model, pending, new_ids)
            if actual == applied and actual != model:
                figures.applied[in_flight] += 1
                model = applied
                if in_flight == "purge":
                    purged.update(pending["ids"])
            elif actual != model:
                return (f"{in_flight} killed midway is half-applied or acknowledged work is lost: "
                        f"{_describe(applied, actual)}"), model, in_flight
        if actual != model:
            return f"memory differs from the acknowledged operations: {_describe(model, actual)}", model, in_flight
        live = sorted(i for i, e in actual.items() if not e.deleted)
        index_live = sorted(memory._index.live_ids().tolist())
        if index_live != live:
            return (f"index live ids differ from the database: only in index {sorted(set(index_live) - set(live))[:5]}"
                    f", only in database {sorted(set(live) - set(index_live))[:5]}"), model, in_flight
        if memory.table.ids.tolist() != live:
            return "label table differs from the database", model, in_flight
        vault = memory._store.vault
        raw = vault.vectors_path.read_bytes()
        for i in purged:
            record_bytes = raw[i * vault.record:(i + 1) * vault.record]
            if record_bytes.strip(b"\0"):
                return f"purged exemplar {i} still has its embedding in the vault", model, in_flight
        newly_purged = [i for i in purged if i in figures.known_vectors]
        hits = byte_scan(path, [(f"embedding of {i}", figures.known_vectors.pop(i)) for i in newly_purged])
        if hits:
            return f"purged embeddings still on disk: {hits[:3]}", model, in_flight
        known_ids, known = memory.exemplars.stored_embeddings(sorted(actual))
        figures.known_vectors.update({int(i): v.astype("<f4").tobytes() for i, v in zip(known_ids, known)})
        verification = memory.audit.verify()
        if not verification.ok:
            return f"audit chain broken: {verification.reason}", model, in_flight
        if live:
            probe_ids = live[:: max(1, len(live) // 5)][:5]
            _, vectors = memory.exemplars.embeddings(probe_ids)
            found, distances = memory.search(vectors, min(3, len(live)))
            if found[:, 0].tolist() != probe_ids or float(distances[:, 0].max()) > 1e-4:
                return f"query of exemplars {probe_ids} did not find themselves first: {found[:, 0].tolist()}", \
                    model, in_flight
            everything, _ = memory.search(vectors[:1], len(live))
            if sorted(everything[0].tolist()) != live:
                return "a search for every live exemplar does not return exactly them", model, in_flight
            results = memory.search.classify_embeddings(vectors, k=5)
            if any(r.label not in set(memory.table.labels) for r in results):
                return "classification returned a label the memory does not hold", model, in_flight
        return None, model, in_flight
    finally:
        memory.close()  # snapshot written when `snapshot`, else (read-only) left behind: the next round replays


class _RecoveryCounter(logging.Handler):
    """Counts what vmem says it did on open (replay, rebuild, finish a purge), by the message's first words."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(logging.INFO)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        words = ["N" if word.isdigit() else word for word in record.getMessage().split()]
        self.counter[" ".join(words[:4])] += 1


def run(kills: int, workdir: Path, seed: int = 1, max_delay: float = 0.6,
        out=sys.stderr) -> Figures:
    """Kill `kills` children at random moments; stop at the first inconsistency."""
    import tests.helpers  # noqa: F401 - registers the test-pixels encoder

    rng = random.Random(seed)
    figures = Figures()
    vmem_log = logging.getLogger("vmem_core")
    saved = vmem_log.level, vmem_log.propagate
    counter = _RecoveryCounter(figures.recoveries)
    vmem_log.setLevel(logging.INFO)
    vmem_log.propagate = False  # counted, not printed
    vmem_log.addHandler(counter)
    try:
        _kill_rounds(kills, workdir, rng, max_delay, figures, out)
    finally:
        vmem_log.removeHandler(counter)
        vmem_log.setLevel(saved[0])
        vmem_log.propagate = saved[1]
    return figures


def _kill_rounds(kills: int, workdir: Path, rng: random.Random, max_delay: float, figures: Figures, out) -> None:
    from vmem_core import VisualMemory
    from vmem_core.errors import MemoryLockedError

    path = workdir / "crash.vmem"
    with VisualMemory.create(path, encoder=ENCODER) as memory:
        ids = memory.exemplars.add([_random_png(rng) for _ in range(12)], [LABELS[i % 3] for i in range(12)],
                         sources=[f"seed-{i}" for i in range(12)])
        model = {i: Exemplar(LABELS[j % 3], False) for j, i in enumerate(ids)}
    purged: set[int] = set()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    started = time.monotonic()
    for round_no in range(kills):
        log_path = workdir / f"round-{round_no}.log"
        focus = OPERATIONS[round_no % len(OPERATIONS)]
        child = context.Process(target=child_main, args=(str(path), str(log_path), focus, rng.getrandbits(32),
                                                         round_no), daemon=True)
        child.start()
        if rng.random() < 0.1:  # kill while it opens (replay, rebuild, finishing a purge)
            time.sleep(rng.uniform(0, 0.3))
        else:
            deadline = time.monotonic() + 60
            while b"ready" not in _log_bytes(log_path):
                if not child.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"round {round_no}: the child died before opening the memory "
                                       f"(exit code {child.exitcode})")
                time.sleep(0.005)
            time.sleep(rng.uniform(0, max_delay))
        if not child.is_alive():
            raise RuntimeError(f"round {round_no}: the child stopped on its own (exit code {child.exitcode}); "
                               "an operation raised: see its traceback above")
        intruder = None
        # the child may have been killed (or be killed) before it created its log: a missing log reads as empty
        if rng.random() < 0.3 and b"ready" in _log_bytes(log_path):  # the child holds the memory: keep out
            try:
                intruder = VisualMemory.open(path, read_only=True)
            except MemoryLockedError:
                figures.refused_while_held += 1
        os.kill(child.pid, signal.SIGKILL)
        if intruder is not None:
            intruder.close()
            child.join()
            figures.inconsistencies.append({"round": round_no, "operation": "open",
                                            "problem": "another process opened the memory while the child held it"})
            break
        child.join()
        records = _read_log(log_path)
        problem, model, in_flight = check_memory(path, model, records, purged, figures, snapshot=rng.random() < 0.5)
        figures.kills[in_flight] += 1
        if problem:
            figures.inconsistencies.append({"round": round_no, "operation": in_flight, "problem": problem})
            break
        if (round_no + 1) % 10 == 0:
            print(f"{round_no + 1} kills, {figures.acknowledged} acknowledged operations verified, "
                  f"{len(model)} rows", file=out, flush=True)
    figures.seconds = time.monotonic() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-delay", type=float, default=0.6, help="longest wait before a kill, in seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the memory and logs here (default: temp)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vmem-crashloop-") as temp:
        workdir = args.workdir or Path(temp)
        workdir.mkdir(parents=True, exist_ok=True)
        figures = run(args.kills, workdir, args.seed, args.max_delay)
    result = figures.to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['kills']} kills in {result['seconds']} s; {result['acknowledged_operations_verified']} "
              f"acknowledged operations verified; inconsistencies: {len(result['inconsistencies'])}")
        for op, count in result["kills_per_operation"].items():
            print(f"    killed during {op:<20} {count:>4}  (found wholly applied: "
                  f"{result['in_flight_found_applied'].get(op, 0)})")
        print("    on reopening: " + ", ".join(f"{what}... x{count}" for what, count in
                                            result["recoveries_on_open"].items()))
        for problem in result["inconsistencies"]:
            print(f"INCONSISTENT after round {problem['round']} ({problem['operation']}): {problem['problem']}")
    return 1 if result["inconsistencies"] else 0


if __name__ == "__main__":
    sys.exit(main())
