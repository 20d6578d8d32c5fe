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
from .storage.record_digests import PendingDigests, record_digests

if TYPE_CHECKING:
    from .memory import VisualMemory

COMMITTED_FIELDS = ("id", "label", "source", "image_sha256", "embedding_sha256")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


class StoredRows:
    """Every row of a memory, live or tombstoned, by id, with the sha256 of its embedding: each embedding is read and
    hashed once per side of a purge, in place (no copy of the matrix), and these digests serve the memory's digest,
    the digest of the exemplars that stay, the certificate's embedding digests and the shared-bytes check."""

    def __init__(self, memory: "VisualMemory", pending: Optional[PendingDigests] = None) -> None:
        """The rows as they are now; their digests from `pending` (started on the vault as it is now, by
        `Erasure.start_record_digests`) where given, else computed here when first asked for."""
        self._memory = memory
        self.rows: list = Erasure(memory).digest_rows()  # (id, label, tombstoned, image sha256)
        self.ids = np.asarray([r[0] for r in self.rows], dtype=np.int64)
        self.tombstoned = np.asarray([bool(r[2]) for r in self.rows], dtype=bool)
        # the vault's records, mapped read-only: record i is id i's embedding (ids without a row too)
        self.records: np.ndarray = Erasure(memory).mapped_vectors(self.ids)
        self._pending = pending
        self._digests: Optional[np.ndarray] = None

    @property
    def digests(self) -> np.ndarray:
        """(rows, 32) uint8: the sha256 of each row's embedding as float32 bytes, in id order (waits for the helper
        process where one was started)."""
        if self._digests is None:
            if self._pending is not None:
                self._digests = self._pending.of(self.ids, self._mapped)
            else:
                self._digests = record_digests(self._mapped(), self.ids)
        return self._digests

    def _mapped(self) -> np.ndarray:
        return self.records if len(self.records) or not len(self.ids) else Erasure(self._memory).mapped_vectors(
            self.ids)

    def live_mask(self, excluding: Sequence[int] = ()) -> np.ndarray:
        return ~self.tombstoned & ~np.isin(self.ids, np.asarray(excluding, dtype=np.int64))

    def release(self) -> None:
        """Unmap the vault (its descriptor closes with the mapping); the digests, if still to come, map it again."""
        self.records = np.zeros((0, self.records.shape[1]), dtype=np.float32)

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """A copy of the embeddings of ids (rows that exist), in the given order."""
        return np.array(self.records[np.asarray(ids, dtype=np.int64)], dtype=np.float32)


def memory_digest(memory: "VisualMemory", stored: Optional[StoredRows] = None) -> str:
    """sha256 over every stored row (id, label, state, image sha256), then the sha256 of every embedding, in id order
    (a digest of digests: each embedding is hashed once, and its digest shared by all a purge proves)."""
    stored = stored or StoredRows(memory)
    digest = hashlib.sha256("".join(f"{i}\t{label}\t{'deleted' if gone else 'live'}\t{sha}\n"
                                    for i, label, gone, sha in stored.rows).encode())
    digest.update(np.ascontiguousarray(stored.digests).tobytes())
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
