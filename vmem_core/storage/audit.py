"""The audit log: every change to a memory as an append-only, hash-chained record.

Each entry's hash covers the previous entry's hash and its own fields, so editing, removing or reordering any entry
breaks every later link; `verify` names the first entry whose stored hash no longer matches.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import socket
from dataclasses import dataclass
from typing import Iterable, Optional

GENESIS = "0" * 64
# every action the log may record; readers match on these names (e.g. `vmem purge verify` looks for "purge" and
# "certify"), so `check_action` refuses any other name rather than chain an entry no reader would recognise
ACTIONS = ("create", "add", "delete", "restore", "relabel", "purge", "certify", "migrate", "tune")


def check_action(action: str) -> str:
    """`action` if it is one of ACTIONS.

    >>> check_action("purge")
    'purge'
    >>> check_action("purged")
    Traceback (most recent call last):
    ...
    ValueError: audit action 'purged' is not one of create, add, delete, restore, relabel, purge, certify, migrate, tune
    """
    if action not in ACTIONS:
        raise ValueError(f"audit action {action!r} is not one of {', '.join(ACTIONS)}")
    return action


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str  # ISO 8601, UTC
    actor: str
    action: str
    details: str  # canonical JSON
    prev_hash: str
    hash: str

    def payload(self) -> dict:
        return json.loads(self.details)


def default_actor(via: str = "library") -> str:
    """Who makes a change: the operating-system user and host, and the tool they used."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()} via {via}"


def canonical(details: dict) -> str:
    return json.dumps(details, sort_keys=True, separators=(",", ":"), default=str)


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, action: str, details: str) -> str:
    """sha256 over the previous hash and this entry's fields, one per line.

    >>> entry_hash(GENESIS, 1, "2026-01-01T00:00:00", "me", "add", "{}")[:12]
    '5e8e250a2c4c'
    """
    text = "\n".join([prev_hash, str(seq), at, actor, action, details])
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_broken: Optional[int]  # seq of the first entry that fails
    reason: str
    differing_ids: tuple = ()  # ids whose row the log does not account for (a change made behind its back)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "first_broken": self.first_broken, "reason": self.reason,
                "differing_ids": list(self.differing_ids)}


def verify(entries: Iterable[AuditEntry], head: Optional[tuple[int, str]] = None,
           state: Optional[dict[int, tuple[bool, str]]] = None) -> Verification:
    """Check the chain from the first entry: sequence numbers, links and hashes; given the recorded head (seq, hash)
    of the last entry written, that nothing was cut from the end; and given the database's `state` ({id: (live,
    label)} of every row), that replaying the log reproduces it: a change made behind the log's back (raw SQL, a
    forged row) is reported by id.

    The chain proves the log consistent with itself and with its head; someone able to rewrite both the whole log
    and the head could forge it, so keep copies of heads elsewhere (each purge certificate records one).
    """
    entries = list(entries)
    prev, count, expected_seq = GENESIS, 0, 1
    for entry in entries:
        count += 1
        if entry.seq != expected_seq:
            return Verification(False, count, entry.seq, f"entry {entry.seq} follows {expected_seq - 1}: "
                                                         "entries were removed or reordered")
        if entry.prev_hash != prev:
            return Verification(False, count, entry.seq, f"entry {entry.seq} does not link to entry {entry.seq - 1}")
        recomputed = entry_hash(entry.prev_hash, entry.seq, entry.at, entry.actor, entry.action, entry.details)
        if recomputed != entry.hash:
            return Verification(False, count, entry.seq, f"entry {entry.seq} was altered after it was written")
        prev, expected_seq = entry.hash, expected_seq + 1
    if head is not None and (expected_seq - 1, prev) != tuple(head):
        return Verification(False, count, expected_seq, f"the log ends at entry {expected_seq - 1} but entry "
                                                        f"{head[0]} was written: entries were removed from the end")
    if state is not None:
        # a memory older than its log (no "create" entry) holds rows no entry added: only logged ids are compared
        if not any(entry.action == "create" for entry in entries):
            logged = replay(entries)
            state = {i: row for i, row in state.items() if i in logged}
        differing = differences(replay(entries), state)
        if differing:
            shown = "; ".join(text for _, text in differing[:10])
            more = f" (and {len(differing) - 10} more)" if len(differing) > 10 else ""
            return Verification(False, count, None, f"the chain is intact, but the database differs from what the log "
                                f"records: {shown}{more}", tuple(i for i, _ in differing))
        return Verification(True, count, None, f"all {count} entries chain correctly, and replaying them gives the "
                                               f"database's {len(state)} rows, labels and states")
    return Verification(True, count, None, f"all {count} entries chain correctly")


def label_runs(labels) -> list[list]:
    """Labels in id order as [label, how many in a row] pairs: what an add logs so that a replay knows each id's
    label (a build adds a label's images together, so its runs are few).

    >>> label_runs(["bag", "bag", "hat", "bag"])
    [['bag', 2], ['hat', 1], ['bag', 1]]
    """
    runs: list[list] = []
    for label in labels:
        if runs and runs[-1][0] == label:
            runs[-1][1] += 1
        else:
            runs.append([label, 1])
    return runs


def expand_ids(summary) -> list[int]:
    """The ids an entry names: an `id_summary` or (a purge's) plain list."""
    if isinstance(summary, dict):
        return [i for first, last in summary.get("runs", []) for i in range(int(first), int(last) + 1)]
    return [int(i) for i in summary or []]


def replay(entries: Iterable[AuditEntry]) -> dict[int, tuple[bool, Optional[str]]]:
    """The rows the log accounts for: {id: (live, label)}; the label is None where an add of a vmem before label runs
    logged several labels without saying which id got which."""
    state: dict[int, tuple[bool, Optional[str]]] = {}
    for entry in entries:
        details = entry.payload()
        ids = expand_ids(details.get("ids"))
        if entry.action == "add":
            if "label_runs" in details:
                labels = [label for label, n in details["label_runs"] for _ in range(int(n))]
            else:
                counts = details.get("labels") or {}
                labels = [next(iter(counts)) if len(counts) == 1 else None] * len(ids)
            state.update((i, (True, label)) for i, label in zip(ids, labels))
        elif entry.action in ("delete", "restore"):
            state.update((i, (entry.action == "restore", state.get(i, (True, None))[1])) for i in ids)
        elif entry.action == "relabel":
            state.update((i, (state.get(i, (True, None))[0], details.get("label"))) for i in ids)
        elif entry.action == "purge":
            for i in ids:
                state.pop(i, None)
    return state


def differences(logged: dict[int, tuple[bool, Optional[str]]], actual: dict[int, tuple[bool, str]]) \
        -> list[tuple[int, str]]:
    """(id, what differs) for every row the log and the database disagree on, by id."""
    out = []
    for i in sorted(set(logged) | set(actual)):
        if i not in actual:
            out.append((i, f"id {i} is missing from the database"))
        elif i not in logged:
            out.append((i, f"id {i} is in the database but no logged add or purge accounts for it"))
        else:
            (log_live, log_label), (live, label) = logged[i], actual[i]
            if log_live != live:
                out.append((i, f"id {i} is {'live' if live else 'deleted'}, the log says "
                               f"{'live' if log_live else 'deleted'}"))
            elif log_label is not None and log_label != label:
                out.append((i, f"id {i} is labelled {label!r}, the log says {log_label!r}"))
    return out


def id_summary(ids) -> dict:
    """A compact, exact description of a set of ids: runs of consecutive ids.

    >>> id_summary([1, 2, 3, 7])
    {'count': 4, 'runs': [[1, 3], [7, 7]]}
    """
    ordered = sorted(int(i) for i in ids)
    runs: list[list[int]] = []
    for i in ordered:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return {"count": len(ordered), "runs": runs}
