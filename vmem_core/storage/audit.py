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

    def to_dict(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "first_broken": self.first_broken, "reason": self.reason}


def verify(entries: Iterable[AuditEntry], head: Optional[tuple[int, str]] = None) -> Verification:
    """Check the chain from the first entry: sequence numbers, links and hashes; and, given the recorded head
    (seq, hash) of the last entry written, that nothing was cut from the end.

    The chain proves the log consistent with itself and with its head; someone able to rewrite both the whole log
    and the head could forge it, so keep copies of heads elsewhere (each purge certificate records one).
    """
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
    return Verification(True, count, None, f"all {count} entries chain correctly")


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
