"""A memory's audit log as a noun: `memory.audit.log()`, `.head()`, `.verify()`, and who it names (`actor`). Every
change writes its own entry as it commits (vmem_core.storage.store), so nothing here can add, alter or drop one."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..storage.audit import Verification
    from ..storage.store import Store


class AuditReads:
    """The hash-chained log of every change made to one open memory (a reader's `audit`)."""

    def __init__(self, store: "Store") -> None:
        self._store = store

    def log(self):
        """Every change ever made, as hash-chained entries (`verify` checks them)."""
        return self._store.audit_entries()

    def head(self):
        """(seq, hash) of the last audit entry written."""
        return self._store.audit_head()

    def verify(self) -> "Verification":
        """Check the audit log's chain, that it ends at its recorded head, and that replaying it gives the database's
        rows (vmem_core.storage.audit.Verification)."""
        return self._store.verify_audit()


class Audit(AuditReads):
    """`memory.audit`: the log, and who it names for this handle's changes."""

    @property
    def actor(self) -> str:
        """Who the audit log names for this handle's changes (default: user@host via library)."""
        return self._store.actor

    @actor.setter
    def actor(self, value: str) -> None:
        self._store.actor = str(value)

    def acting_as(self, actor: str):
        """A context naming `actor` in the audit log for this thread's changes (e.g. a CLI command the app runs)."""
        return self._store.acting_as(actor)
