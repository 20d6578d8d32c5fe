"""What a purge keeps to prove itself, and what it must not keep: salted commitments in the memory, the salts and the
plain digests only in the certificate handed to whoever asked for the purge.

Anyone holding an image can hash it, and anyone holding the encoder can embed it; so a sha256 of a purged image or of
its embedding, or its file name, left anywhere in the memory folder would tell them it was there: the very membership
a purge is meant to erase. Instead, each removed exemplar gets a fresh 256-bit random salt, and the audit log records

    commitment = sha256(salt || canonical JSON of {id, label, source, image_sha256, embedding_sha256})

which reveals nothing without the salt. The certificate the requester takes away holds the salts and the plain
values, and a digest of the whole certificate is logged after it is made, so that `verify` can check, against the
memory alone: the audit chain, that the purge and its commitments are in it and match the certificate, that the
certificate is the one the purge produced (unaltered), and that none of its ids has a row any more.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from .memory.erasure import Erasure
from .storage.audit import canonical

if TYPE_CHECKING:
    from .memory import VisualMemory

COMMITTED_FIELDS = ("id", "label", "source", "image_sha256", "embedding_sha256")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class StoredRows:
    """Every row of a memory, live or tombstoned, by id, with its embedding: read once per side of a purge and
    shared by the digest, the shared-bytes check and the exactness check."""
    rows: list  # (id, label, tombstoned, image sha256)
    ids: np.ndarray
    tombstoned: np.ndarray
    vectors: np.ndarray

    @classmethod
    def read(cls, memory: "VisualMemory") -> "StoredRows":
        rows = Erasure(memory).digest_rows()
        ids = np.asarray([r[0] for r in rows], dtype=np.int64)
        return cls(rows, ids, np.asarray([bool(r[2]) for r in rows], dtype=bool),
                   memory.exemplars.stored_embeddings(ids)[1])

    def live_mask(self, excluding: Sequence[int] = ()) -> np.ndarray:
        return ~self.tombstoned & ~np.isin(self.ids, np.asarray(excluding, dtype=np.int64))

    def live(self, excluding: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        keep = self.live_mask(excluding)
        if keep.all():  # no copy of the whole matrix
            return self.ids, self.vectors
        return self.ids[keep], self.vectors[keep]


def hash_rows(digest, vectors: np.ndarray, keep: Optional[np.ndarray] = None) -> None:
    """Update `digest` with the float32 bytes of the rows of `vectors` where `keep` (all rows by default), in order:
    run by run from the matrix itself, without the copy that gathering them (or `tobytes`) would make."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if keep is None or keep.all():
        digest.update(memoryview(vectors).cast("B"))
        return
    edges = np.flatnonzero(np.diff(np.r_[0, keep.astype(np.int8), 0]))
    for start, stop in zip(edges[::2], edges[1::2]):
        digest.update(memoryview(vectors[start:stop]).cast("B"))


def memory_digest(memory: "VisualMemory", stored: Optional[StoredRows] = None) -> str:
    """sha256 over every stored row (id, label, state, image sha256) and every embedding, in id order."""
    stored = stored or StoredRows.read(memory)
    digest = hashlib.sha256("".join(f"{i}\t{label}\t{'deleted' if gone else 'live'}\t{sha}\n"
                                    for i, label, gone, sha in stored.rows).encode())
    hash_rows(digest, stored.vectors)
    return digest.hexdigest()


def new_salt() -> str:
    """A fresh 256-bit random salt, as hex."""
    return secrets.token_hex(32)


def commitment(salt: str, exemplar: dict) -> str:
    """The salted commitment to one removed exemplar's identifying values (COMMITTED_FIELDS of `exemplar`).

    >>> row = {"id": 1, "label": "bag", "source": "a.png", "image_sha256": "x", "embedding_sha256": "y"}
    >>> commitment("00" * 32, row)[:12], commitment("01" * 32, row)[:12]
    ('2de5ed400096', '9e2551917f30')
    """
    fields = {name: exemplar[name] for name in COMMITTED_FIELDS}
    return hashlib.sha256(bytes.fromhex(salt) + canonical(fields).encode()).hexdigest()


def certificate_digest(certificate: dict) -> str:
    """sha256 of a certificate as handed out (its salts make this digest reveal nothing of its contents)."""
    return hashlib.sha256(canonical(certificate).encode()).hexdigest()


@dataclass
class CertificateCheck:
    ok: bool
    checks: list[Check]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def verify_certificate(memory: "VisualMemory", certificate: dict) -> CertificateCheck:
    """Check a purge certificate against the memory it came from (see the module's docstring for what is checked)."""
    checks = []
    audit = memory.audit.verify()
    checks.append(Check("audit log intact", audit.ok, audit.reason))
    purge_id = certificate.get("purge_id")
    entries = [e for e in memory.audit.log() if e.payload().get("purge_id") == purge_id and purge_id]
    purge_entry = next((e.payload() for e in entries if e.action == "purge"), None)
    certify_entry = next((e.payload() for e in entries if e.action == "certify"), None)
    removed = certificate.get("removed") if isinstance(certificate.get("removed"), list) else []
    ids = [r.get("id") for r in removed if isinstance(r, dict)]
    if purge_entry is None:
        checks.append(Check("purge recorded", False, f"the audit log records no purge {purge_id!r}"))
    else:
        logged = purge_entry.get("commitments") or []
        same_ids = purge_entry.get("ids") == ids
        checks.append(Check("purge recorded", same_ids,
                            f"purge {purge_id} removed ids {purge_entry.get('ids')}"
                            + ("" if same_ids else f", the certificate names {ids}")))
        try:
            recomputed = [commitment(r["salt"], r) for r in removed]
            matching = sum(a == b for a, b in zip(recomputed, logged))
            detail = (f"{matching} of {len(logged)} commitment(s) in the audit log match the certificate's salts "
                      "and values")
        except (KeyError, TypeError, ValueError) as exc:
            recomputed, matching, detail = [], 0, f"the certificate lacks a salt or value ({exc!r})"
        checks.append(Check("commitments", bool(logged) and recomputed == logged, detail))
    logged_digest = (certify_entry or {}).get("certificate_sha256")
    unaltered = logged_digest is not None and logged_digest == certificate_digest(certificate)
    checks.append(Check("certificate unaltered", unaltered,
                        "its digest is the one logged when it was issued" if unaltered else
                        "no digest logged for this purge" if logged_digest is None else
                        "its digest differs from the one logged when it was issued: it was edited"))
    still_there = sorted(set(ids) & set(Erasure(memory).all_ids().tolist())) if ids else []
    checks.append(Check("ids absent", bool(ids) and not still_there,
                        f"none of the {len(ids)} id(s) has a row in the memory" if not still_there else
                        f"id(s) {still_there[:20]} still have rows"))
    return CertificateCheck(all(c.passed for c in checks), checks)
