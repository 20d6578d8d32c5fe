"""Certified unlearning: purge exemplars physically and prove it.

`delete` is a tombstone (instant, undoable). `purge` removes the bytes: the vectors are overwritten in the index and
its snapshot rewritten, the rows (thumbnails included) leave a freshly rewritten database, derived caches are dropped.
The certificate records what was removed (ids, sha256 of each image and embedding, with the salts of their
commitments: vmem_core.purge_proof), digests of the memory before and after, and three checks:

1. byte scan: no file in the memory directory holds any removed embedding (float32 or float16) or thumbnail;
2. the removed embeddings, queried, return none of the removed ids;
3. exactness: the memory after the purge holds exactly the exemplars it held before minus the removed ones (exact
   nearest-neighbour predictions over its stored embeddings equal those of a memory built from scratch without
   them), and its index agrees with that exact search;
4. whatever the index backend verified itself (vmem_core.backends): hnswlib says how its snapshot was scrubbed;
   Milvus says whether compaction was run and waited for, whether the ids are gone from the collection, and whether
   its files could be inspected at all (only an embedded milvus-lite folder lies inside the memory, where the byte
   scan reaches; a server's storage is beyond it and the certificate says so).

The certificate goes to whoever asked for the purge (a path outside the memory folder, or printed); the memory keeps
only a receipt without the plain digests, salts or names, and the audit log the salted commitments and the digest of
the certificate, so that nothing left in the folder lets anyone holding the image recognise it.

A purge interrupted anywhere (a crash, a kill) is finished on the next open and issues the same certificate, to the
path its requester named: its journal keeps the salts only until then (see the journal's section below).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from .errors import VmemError
from .memory.core import on_interrupted_purge
from .memory.erasure import Erasure
from .purge_proof import (Check, StoredRows, certificate_digest, commitment, memory_digest,  # noqa: F401
                          new_salt)
from .storage.atomic import fsync_dir, write_json_atomic
from .storage.audit import id_summary
from .storage.byte_scan import byte_scan  # noqa: F401 - byte_scan is also this module's API
from .storage.layout import CERTIFICATE_DIR, PURGE_JOURNAL
from .storage.record_digests import PendingDigests
from .voting import label_classes, prepare_votes, vote_all_k

if TYPE_CHECKING:
    from .backends.base import Evidence
    from .memory import VisualMemory

log = logging.getLogger(__name__)

PAPER_DELETION_MS = 20.0  # Geirhos et al. (2025): deleting an exemplar takes under 20 ms; the app shows ours beside it
PROBE_SAMPLE = 200
EXACT_K = 10


@dataclass
class RemovedExemplar:
    id: int
    label: str
    source: str
    image_sha256: str
    embedding_sha256: str
    salt: str = ""  # only in the certificate handed out: with it, `commitment` can be recomputed from the values
    commitment: str = ""  # the salted commitment the audit log keeps


@dataclass
class Certificate:
    purge_id: str
    started_at: str
    purge_seconds: float
    removed: list[RemovedExemplar]
    digest_before: str
    digest_after: str
    checks: list[Check] = field(default_factory=list)
    audit_head: Optional[tuple[int, str]] = None  # a copy outside the database: anchors the audit log
    finished_on_reopen: bool = False  # the purge's process stopped partway; the next open finished and certified it

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict:
        return {
            "purge_id": self.purge_id,
            "started_at": self.started_at,
            "purge_seconds": round(self.purge_seconds, 4),
            "ids": [r.id for r in self.removed],
            "removed": [asdict(r) for r in self.removed],
            "digest_before": self.digest_before,
            "digest_after": self.digest_after,
            "checks": [asdict(c) for c in self.checks],
            "audit_head": {"seq": self.audit_head[0], "hash": self.audit_head[1]} if self.audit_head else None,
            "finished_on_reopen": self.finished_on_reopen,
            "passed": self.passed,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Certificate":
        """The certificate `to_dict` wrote (to_dict of the result equals `data`, so its digest is unchanged)."""
        head = data.get("audit_head")
        return cls(data["purge_id"], data["started_at"], data["purge_seconds"],
                   [RemovedExemplar(**r) for r in data["removed"]], data["digest_before"], data["digest_after"],
                   [Check(**c) for c in data["checks"]], (head["seq"], head["hash"]) if head else None,
                   bool(data.get("finished_on_reopen", False)))

    def receipt(self) -> dict:
        """What the memory folder keeps of the certificate: ids, commitments and checks; no salt, no plain digest,
        no name, and not the digest of the memory before (it covered the removed images' digests)."""
        full = self.to_dict()
        return {"purge_id": self.purge_id, "started_at": self.started_at, "purge_seconds": full["purge_seconds"],
                "ids": full["ids"], "commitments": [r.commitment for r in self.removed],
                "digest_after": self.digest_after, "checks": full["checks"], "audit_head": full["audit_head"],
                "finished_on_reopen": self.finished_on_reopen, "passed": self.passed,
                "note": "the requester's certificate holds the salts and digests; `vmem purge verify CERT MEM`"}

    def explain(self) -> str:
        """The certificate in plain words."""
        lines = [f"Purged {len(self.removed)} exemplar(s) in {self.purge_seconds * 1000:.0f} ms "
                 f"(ids {', '.join(str(r.id) for r in self.removed[:20])}{' ...' if len(self.removed) > 20 else ''})."]
        for check in self.checks:
            lines.append(f"{'PASSED' if check.passed else 'FAILED'}  {check.name}: {check.detail}")
        lines.append(f"memory digest {self.digest_before[:16]} -> {self.digest_after[:16]}")
        return "\n".join(lines)


def byte_patterns(vectors: np.ndarray, thumbnails: Sequence[Optional[bytes]]) -> list[tuple[str, bytes]]:
    """What a removed exemplar leaves behind: its embedding as float32 and float16 bytes, and its thumbnail."""
    patterns = []
    for i, vector in enumerate(np.asarray(vectors, dtype=np.float32)):
        patterns.append((f"embedding[{i}] float32", vector.tobytes()))
        patterns.append((f"embedding[{i}] float16", vector.astype(np.float16).tobytes()))
    for i, thumb in enumerate(thumbnails):
        if thumb:
            patterns.append((f"thumbnail[{i}]", bytes(thumb)))
    return patterns


def _shared_with_remaining(memory: VisualMemory, ids: Sequence[int], vectors: np.ndarray,
                           thumbnails: Sequence[Optional[bytes]], everything: StoredRows) -> set[bytes]:
    """Byte patterns of removed exemplars that a remaining exemplar, live or tombstoned, holds too (the same image
    added twice, or two images with the same thumbnail): they legitimately stay on disk, so the byte scan cannot
    expect them gone."""
    removed = set(int(i) for i in ids)
    shared = Erasure(memory).thumbnails_kept_elsewhere([t for t in thumbnails if t], removed)
    remaining = ~np.isin(everything.ids, np.asarray(sorted(removed), dtype=np.int64))
    if not remaining.any() or not len(vectors):
        return shared
    # rows whose embedding digest starts as a removed one's does, then compared whole: byte-identical rows only
    heads = everything.digests[:, :8].copy().view("<u8").ravel()
    wanted = heads[np.searchsorted(everything.ids, np.asarray(sorted(removed), dtype=np.int64))]
    keys = {row.tobytes() for row in np.asarray(vectors, dtype=np.float32)}
    for row in everything.vectors(everything.ids[remaining & np.isin(heads, wanted)]):
        if row.tobytes() in keys:
            shared.add(row.tobytes())
            shared.add(row.astype(np.float16).tobytes())
    return shared


def _exact_predictions(ids: np.ndarray, similarities: np.ndarray, classes: np.ndarray, k: int,
                       num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN (rank voting) over the given exemplars, from the probes' similarities to each (n_probes,
    len(ids)): (neighbour ids, predictions) per probe, equal similarities ordered by position (`numpy_top_k`)."""
    from .backends.hnsw_index import top_k_of

    order, distances = top_k_of(similarities, k)
    votes, weights, _ = prepare_votes(classes[order], distances, "rank")
    return ids[order], vote_all_k(votes, weights, num_classes)[:, -1]


def _exact_predictions_of_records(similarities: np.ndarray, ids: np.ndarray, classes: np.ndarray, k: int,
                                  num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """`_exact_predictions` over the records of `ids` (sorted), from the probes' similarities to every record of the
    vault, record i being id i: the other columns are set to -inf in place (the caller's matrix, of no further use),
    where picking the columns of `ids` copied the matrix (48 MB for 200 probes at 60,000)."""
    others = np.ones(similarities.shape[1], dtype=bool)
    others[ids] = False
    similarities[:, others] = -np.inf
    by_record = np.full(similarities.shape[1], -1, dtype=np.int64)
    by_record[ids] = classes
    return _exact_predictions(np.arange(similarities.shape[1]), similarities, by_record, min(k, len(ids)),
                              num_classes)


# --- the purge journal: a purge interrupted anywhere is finished, and certified, on the next open ----------------
#
# The journal is written (atomically, fsynced) before the first destructive step, and holds all that the certificate
# needs and the purge destroys: the salts and plain digests of the removed exemplars, the digest of the memory before,
# the removed embeddings and thumbnails (base64, for the byte scan and the leak query), the probes and a digest of the
# exemplars that stay (for the exactness check). So a purge finished on reopen issues the same certificate: the same
# purge id, salts and commitments, and the same checks, run on the memory as it is once the purge is done.
#
# Privacy: while the journal exists it identifies what is being removed; it exists only while those exemplars'
# rows, vectors and thumbnails are still (partly) in the folder anyway, so it reveals nothing they do not. Once the
# checks have run the journal is rewritten to hold the issued certificate alone (no embedding, no thumbnail), the
# certificate is logged and handed out, and the journal is deleted: after a purge, finished at once or on reopen,
# the folder keeps no salt. A purge with no certificate path has nowhere to hand a certificate finished on reopen:
# its salts go with the journal and only the receipt and the logged commitments remain.

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _vectors_b64(vectors: np.ndarray) -> dict:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return {"shape": list(vectors.shape), "float32": _b64(vectors.tobytes())}


def _vectors_from(entry: dict) -> np.ndarray:
    # a writable copy: torch (exact search) warns on read-only arrays
    return np.frombuffer(base64.b64decode(entry["float32"]), dtype=np.float32).reshape(entry["shape"]).copy()


def _expand(summary: dict) -> np.ndarray:
    """The ids of an `id_summary` (runs of consecutive ids), in order."""
    runs = [np.arange(first, last + 1, dtype=np.int64) for first, last in summary["runs"]]
    return np.concatenate(runs) if runs else np.zeros(0, dtype=np.int64)


def _rows_digest(ids: np.ndarray, digests: np.ndarray, labels: Sequence[str]) -> str:
    """sha256 of exemplars' ids, the sha256 of each one's embedding (`StoredRows.digests`) and labels: the exemplars
    that must stay, before and after a purge."""
    digest = hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(digests, dtype=np.uint8).tobytes())
    digest.update("\n".join(labels).encode())
    return digest.hexdigest()


def _live_labels(memory: "VisualMemory", ids: np.ndarray) -> list[str]:
    table = memory.table
    return [table.labels[c] if c >= 0 else "" for c in table.class_indices(ids)]


def purge_physically(memory: "VisualMemory", ids: Sequence[int], purge_id: str, details: dict,
                     certificate_plan: Optional[dict] = None) -> list["Evidence"]:
    """Remove exemplars' bytes from the index and the database files, journalled: the journal is written first, so
    an interrupted purge finishes when the memory next opens. Returns what the index backend did and verified.

    `certificate_plan` (from `purge`) is what the certificate needs and the purge destroys; journalled with the rest,
    it lets a purge finished on reopen issue its certificate."""
    with memory.exemplars.exclusive():  # one purge at a time: the journal is a single file
        ids = Erasure(memory).check_purgeable(ids)
        journal = {"purge_id": purge_id, "ids": ids, "details": details,
                   # the rows that say where they lie are about to go
                   "thumbnails": Erasure(memory).thumbnail_places(ids)}
        if certificate_plan is not None:
            journal["certificate_plan"] = certificate_plan
        # refused before the journal, not halfway: a full disk would leave the purge pending, salts and all
        memory._store.check_space_for_purge(len(json.dumps(journal)))
        write_json_atomic(memory.path / PURGE_JOURNAL, journal)
        return _erase_journalled(memory, journal)


def _erase_journalled(memory: "VisualMemory", journal: dict) -> list["Evidence"]:
    """The journal's destructive steps; each is idempotent, so a crash anywhere is finished by a re-run."""
    evidence = Erasure(memory).erase_rows(journal["ids"], journal["purge_id"], journal["details"],
                                          journal["thumbnails"])
    return evidence


def finish_interrupted_purge(memory: "VisualMemory") -> Optional[Certificate]:
    """Finish a purge whose process stopped partway (VisualMemory calls this on open when a journal is there), and
    issue its certificate: written to the path its requester named, logged and receipted in the memory. Returns the
    certificate, or None for a journal from before certificates were journalled (the purge is finished uncertified).
    """
    journal_path = memory.path / PURGE_JOURNAL
    log.warning("finishing a purge that was interrupted (%s)", journal_path)
    journal = json.loads(journal_path.read_text())
    if "issued" in journal:  # stopped after the checks: hand out the certificate already made, unchanged
        certificate = Certificate.from_dict(journal["issued"])
        path = journal.get("certificate_path")
    else:
        start = time.perf_counter()
        evidence = _erase_journalled(memory, journal)
        plan = journal.get("certificate_plan")
        if plan is None:
            journal_path.unlink()
            return None
        certificate = _checked_certificate(memory, journal, plan, evidence, time.perf_counter() - start)
        certificate.finished_on_reopen = True
        path = plan["path"]
    written = _issue(memory, certificate, path)
    log.warning("purge %s of %d exemplar(s) finished, checks %s; %s", certificate.purge_id, len(certificate.removed),
                "passed" if certificate.passed else "FAILED",
                f"certificate written to {path}" if written else "receipted in the memory (no certificate issued)")
    return certificate


def _issue(memory: "VisualMemory", certificate: Certificate, path: Optional[str]) -> bool:
    """Log the certificate's digest, hand it out, keep its receipt, then drop the journal (and the salts with it).

    The certificate is journalled first, so a crash in between issues this same certificate again on reopen,
    never a second one whose digest the log would not hold. Returns whether the certificate was written to `path`."""
    journal_path = memory.path / PURGE_JOURNAL
    full = certificate.to_dict()
    write_json_atomic(journal_path, {"purge_id": certificate.purge_id, "issued": full, "certificate_path": path})
    digest = certificate_digest(full)
    logged = {e.payload().get("certificate_sha256") for e in memory.audit.log()
              if e.action == "certify" and e.payload().get("purge_id") == certificate.purge_id}
    if digest not in logged:
        Erasure(memory).record_certificate(certificate.purge_id, digest)
    written = False
    if path is not None:
        try:
            write_json_atomic(Path(path), full)
            written = True
        except OSError as exc:  # e.g. its folder is gone since: keeping the salts in the memory would defeat the purge
            log.error("purge %s: could not write its certificate to %s (%s); the memory keeps only its receipt",
                      certificate.purge_id, path, exc)
    directory = memory.path / CERTIFICATE_DIR
    directory.mkdir(exist_ok=True)
    write_json_atomic(directory / f"purge-{certificate.started_at.replace(':', '')}-{certificate.purge_id[:8]}.json",
                      certificate.receipt())
    journal_path.unlink()
    fsync_dir(memory.path)
    return written


def purge(memory: VisualMemory, ids: Optional[Sequence[int]] = None, probes: Optional[np.ndarray] = None,
          seed: int = 0, certificate_path: Optional[Path] = None) -> Certificate:
    """Purge `ids` (default: every tombstoned exemplar), verify it, and return the certificate (also written to
    `certificate_path` if given); the memory keeps a receipt (`Certificate.receipt`). If the process stops partway,
    the next open finishes the purge and writes the same certificate to `certificate_path`.

    Args:
        ids: exemplars to remove, live or tombstoned.
        probes: query embeddings for the exactness check (default: the removed embeddings and up to 200 live
            exemplars).
        certificate_path: where to write the certificate, outside the memory folder.

    Raises:
        UnknownIdError: an id does not exist or was already purged (nothing is changed).
        VmemError: `certificate_path` lies inside the memory folder or in no existing folder, or already exists
            (nothing is changed).
    """
    if certificate_path is not None:
        certificate_path = Path(certificate_path).resolve()
        if certificate_path.is_relative_to(Path(memory.path).resolve()):
            raise VmemError(f"certificate path {certificate_path} is inside the memory folder {memory.path}, where "
                            "it would keep what the purge removes; choose a path outside it. Nothing was purged")
        if not certificate_path.parent.is_dir():
            raise VmemError(f"certificate path {certificate_path}: its folder does not exist. Nothing was purged")
        if certificate_path.exists():  # e.g. an earlier purge's certificate: the only copy of the salts it issued
            raise VmemError(f"certificate path {certificate_path} already exists; choose a new path (a certificate "
                            "written there before holds the only salts that prove its purge). Nothing was purged")
    with memory.exemplars.exclusive():  # the before/after comparison must not see another thread's changes
        # unknown or purged ids are refused before any work starts
        if ids is None and not memory.exemplars.tombstoned_ids():
            raise VmemError("nothing to purge: no ids given and no tombstoned exemplars")
        ids = Erasure(memory).check_purgeable(memory.exemplars.tombstoned_ids() if ids is None else ids)
        # the embeddings' digests are taken by a helper process while this one loads the index (which the removal
        # needs anyway, and which holds the GIL while it loads)
        pending = Erasure(memory).start_record_digests()
        try:
            Erasure(memory).open_index()
            journal, plan = _plan_purge(memory, ids, probes, seed, certificate_path, pending)
        finally:
            pending.close()
        start = time.perf_counter()
        evidence = purge_physically(memory, journal["ids"], journal["purge_id"], journal["details"], plan)
        certificate = _checked_certificate(memory, journal, plan, evidence, time.perf_counter() - start)
        _issue(memory, certificate, plan["path"])
    return certificate


def _plan_purge(memory: VisualMemory, ids: list[int], probes: Optional[np.ndarray], seed: int,
                certificate_path: Optional[Path], pending: Optional[PendingDigests] = None) -> tuple[dict, dict]:
    """Everything the certificate needs that the purge destroys, read before it: (journal head, certificate plan).
    `ids`: checked (`Erasure.check_purgeable`); `pending`: the embeddings' digests, started on the vault as it is
    now."""
    rows = Erasure(memory).plain_rows(ids)  # by id, as `ids` are
    everything = StoredRows(memory, pending)  # hashed once: every digest below and the shared bytes use it
    removed_vectors = everything.vectors(ids)
    removed_digests = everything.digests[np.searchsorted(everything.ids, ids)]
    removed = [
        RemovedExemplar(int(i), str(label), str(source), str(sha256), digest.tobytes().hex(), new_salt())
        for (i, label, source, sha256, _), digest in zip(rows, removed_digests)
    ]
    for exemplar in removed:
        exemplar.commitment = commitment(exemplar.salt, asdict(exemplar))
    thumbnails = [bytes(t) if isinstance(t, (bytes, bytearray, memoryview)) else None for *_, t in rows]
    patterns = byte_patterns(removed_vectors, thumbnails)
    shared = _shared_with_remaining(memory, ids, removed_vectors, thumbnails, everything)
    patterns = [(name, pattern) for name, pattern in patterns if pattern not in shared]

    # the memory as it would be built from scratch without these exemplars
    keep = everything.live_mask(excluding=ids)
    kept_ids = everything.ids[keep]
    if probes is None:
        rng = np.random.default_rng(seed)
        sample = rng.choice(len(kept_ids), min(PROBE_SAMPLE, len(kept_ids)), replace=False) if len(kept_ids) else []
        probes = np.concatenate([removed_vectors, everything.vectors(kept_ids[sample])]) if len(sample) \
            else removed_vectors
    probes = np.asarray(probes, dtype=np.float32)

    plan = {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "removed": [asdict(r) for r in removed],
        "digest_before": memory_digest(memory, everything),
        "path": None if certificate_path is None else str(certificate_path),
        "patterns": [[name, _b64(pattern)] for name, pattern in patterns],
        "shared": len(shared),
        "removed_vectors": _vectors_b64(removed_vectors),
        "probes": _vectors_b64(probes),
        "labels": list(memory.table.labels),
        "kept": id_summary(kept_ids),
        "kept_sha256": _rows_digest(kept_ids, everything.digests[keep], _live_labels(memory, kept_ids)),
    }
    journal = {"purge_id": uuid.uuid4().hex, "ids": ids,
               "details": {"ids": ids, "commitments": [r.commitment for r in removed]}}
    return journal, plan


def _checked_certificate(memory: VisualMemory, journal: dict, plan: dict, evidence: list["Evidence"],
                         seconds: float) -> Certificate:
    """The certificate of a purge carried out, its checks run on the memory as it is now against the plan."""
    # the digests of the memory after are taken by a helper process while this one runs the other checks; they are
    # first needed by the exactness check, then by the certificate's digest of the memory after
    pending = Erasure(memory).start_record_digests()
    try:
        return _certify(memory, journal, plan, evidence, seconds, StoredRows(memory, pending))
    finally:
        pending.close()


def _certify(memory: VisualMemory, journal: dict, plan: dict, evidence: list["Evidence"], seconds: float,
             after: StoredRows) -> Certificate:
    ids = journal["ids"]
    removed = [RemovedExemplar(**r) for r in plan["removed"]]
    removed_vectors, probes = _vectors_from(plan["removed_vectors"]), _vectors_from(plan["probes"])
    patterns = [(name, base64.b64decode(pattern)) for name, pattern in plan["patterns"]]
    audit_head = memory.audit.head()
    checks: list[Check] = []
    # the probes against every stored record at once, read in place (the exactness check searches its rows among
    # them); then the mapping goes: the byte scan would read a file this process holds open with pread, not mapped
    similarities = probes @ after.records.T
    after.release()

    hits = byte_scan(memory.path, patterns)
    files = [p for p in memory.path.rglob("*") if p.is_file()]
    shared = plan["shared"]
    checks.append(Check(
        "byte scan",
        not hits,
        f"{len(patterns)} byte patterns (embeddings as float32 and float16, thumbnails) searched in {len(files)} "
        f"files ({sum(p.stat().st_size for p in files):,} bytes): "
        + ("none found" if not hits else "found " + "; ".join(f"{name} in {path}" for path, name in hits[:5]))
        + (f"; {shared} pattern(s) not searched: byte-identical to an exemplar that stays (the same image "
           "added twice; delete and purge it too to remove them)" if shared else ""),
    ))

    if len(memory):
        found_ids, _ = memory.search(removed_vectors, min(50, len(memory)))
        leaked = sorted(set(found_ids.ravel().tolist()) & set(ids))
    else:
        leaked = []
    checks.append(Check(
        "removed images return none of their ids",
        not leaked,
        f"each removed embedding queried for its {min(50, len(memory))} nearest exemplars: "
        + ("no removed id among them" if not leaked else f"returned removed id(s) {leaked[:10]}"),
    ))

    kept_ids = _expand(plan["kept"])
    after_live = ~after.tombstoned
    after_ids = after.ids[after_live]
    if len(kept_ids) == 0 or len(after_ids) == 0:
        same = len(after_ids) == len(kept_ids)
        detail = "the memory is empty, as one built from scratch without them would be" if same else \
            f"{len(after_ids)} exemplars remain where none should" if len(after_ids) else \
            f"no exemplar remains where {len(kept_ids)} should"
        checks.append(Check("exactness", same, detail))
    else:
        labels_before = plan["labels"]
        after_labels = _live_labels(memory, after_ids)
        # the exemplars that stay are those the plan recorded, unchanged: then a memory built from scratch without
        # the removed ones would hold exactly the rows this one holds
        same_rows = np.array_equal(kept_ids, after_ids) and \
            _rows_digest(after_ids, after.digests[after_live], after_labels) == plan["kept_sha256"]
        after_classes = label_classes(after_labels, labels_before)
        scratch_ids = kept_ids[np.isin(kept_ids, after.ids)]  # those that still have a row to search
        scratch_classes = after_classes if np.array_equal(scratch_ids, after_ids) else \
            label_classes(_live_labels(memory, scratch_ids), labels_before)  # the same ids: the same labels
        # the same ids, vectors and labels: the exact search from scratch is the one over the memory, term for term
        from_scratch_is_after = same_rows and np.array_equal(scratch_classes, after_classes)
        if not from_scratch_is_after:  # first: the search over the memory below overwrites the matrix
            scratch_neighbors, scratch_pred = _exact_predictions(scratch_ids, similarities[:, scratch_ids],
                                                                  scratch_classes, EXACT_K, len(labels_before))
        after_neighbors, after_pred = _exact_predictions_of_records(similarities, after_ids, after_classes,
                                                                    EXACT_K, len(labels_before))
        if from_scratch_is_after:
            scratch_neighbors, scratch_pred = after_neighbors, after_pred
        same_predictions = np.array_equal(scratch_pred, after_pred) and np.array_equal(scratch_neighbors,
                                                                                       after_neighbors)
        index_ids, _ = memory.search(probes, min(EXACT_K, len(after_ids)))
        index_agrees = float(np.mean([set(a) == set(b) for a, b in zip(index_ids, after_neighbors)]))
        checks.append(Check(
            "exactness",
            bool(same_rows and same_predictions),
            f"{len(probes)} probe queries: predictions and {EXACT_K} nearest neighbours "
            f"{'equal' if same_predictions else 'DIFFER from'} those of a memory built from scratch without the "
            f"removed exemplars; stored exemplars {'identical' if same_rows else 'DIFFER'} "
            f"({len(after_ids)} live); the index returns the exact neighbours for {index_agrees:.1%} of probes"
            + ("" if index_agrees == 1 else " (approximate search)"),
        ))

    # what the index backend did and verified itself (e.g. Milvus: compaction waited for, ids no longer stored)
    checks.extend(Check(e.name, e.passed, e.detail) for e in evidence)
    return Certificate(journal["purge_id"], plan["started"], seconds, removed, plan["digest_before"],
                       memory_digest(memory, after), checks, audit_head=audit_head)


on_interrupted_purge(finish_interrupted_purge)  # an open that finds a purge journal finishes it through this module
