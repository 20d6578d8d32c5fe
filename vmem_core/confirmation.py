"""Confirmations that cannot hit the wrong exemplar: what a destructive action will touch is fixed when it is asked for.

A page asks "Delete exemplars 3, 7?" and acts a click later, in another rerun, while the user may have changed the
selection and another session (or a `vmem` command the app hosts) may have changed those very exemplars. `ask`
freezes the ids, their state (label, deleted or not) and the memory's change counter; `carry_out` checks all three
again under the memory's exclusive lock and runs the change only if nothing that matters moved, else raises
`StaleConfirmationError` saying what moved. Changes to *other* exemplars in between do not block it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import pandas as pd

from .errors import VmemError
from .memory import VisualMemory

GONE = None  # the state of an id that no longer exists (purged) or never did


class StaleConfirmationError(VmemError):
    """A confirmation no longer matches the selection or the memory; nothing was changed."""


@dataclass(frozen=True)
class PendingChange:
    """An action on exemplars, as it was asked for: confirm it with `carry_out`."""

    action: str  # a verb for messages: "delete", "relabel", "purge"
    ids: tuple[int, ...]
    change_counter: int  # the memory's change counter when it was asked for
    states: tuple[Optional[tuple[str, bool]], ...]  # (label, deleted) per id, GONE if absent
    detail: str = ""  # e.g. the new label of a relabel

    def describe(self) -> str:
        """e.g. "delete exemplar(s) 3, 7 (as of change #41)"."""
        return f"{self.action} exemplar(s) {id_list(self.ids)} (as of change #{self.change_counter})"


def id_list(ids: Sequence[int], shown: int = 20) -> str:
    """Ids for a message: the first `shown`, then how many more (a select-all of a large memory is not a page of
    numbers).

    >>> id_list(range(25))
    '0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19 and 5 more'
    """
    text = ", ".join(map(str, list(ids)[:shown]))
    return text + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


def _states(memory: VisualMemory, ids: Sequence[int]) -> tuple[Optional[tuple[str, bool]], ...]:
    rows = memory.exemplars.rows(ids)
    found = {int(r.id): (str(r.label), bool(pd.notna(r.deleted_at))) for r in rows.itertuples()}
    return tuple(found.get(int(i), GONE) for i in ids)


def ask(memory: VisualMemory, action: str, ids: Sequence[int], detail: str = "") -> PendingChange:
    """Freeze what `action` will touch: `ids`, their current state and the memory's change counter.

    Raises:
        ValueError: `ids` is empty (there is nothing to confirm).
    """
    ids = tuple(int(i) for i in ids)
    if not ids:
        raise ValueError(f"nothing to {action}: no exemplar ids given")
    counter = memory.change_counter
    return PendingChange(action, ids, counter, _states(memory, ids), detail)


def _describe_state(state: Optional[tuple[str, bool]]) -> str:
    if state is GONE:
        return "gone (purged)"
    label, deleted = state
    return f"deleted ('{label}')" if deleted else f"live ('{label}')"


def stale_reason(memory: VisualMemory, pending: PendingChange, selection: Optional[Sequence[int]] = None) -> str:
    """Why `pending` may no longer be carried out ("" when it may): one of its exemplars changed since it was asked
    for (deleted, restored, relabelled or purged, by anyone), or the selection on the page is no longer the one it
    was asked for. The first is said first: it is what makes the selection on the page differ, too."""
    if memory.change_counter != pending.change_counter:
        now = _states(memory, pending.ids)
        moved = [f"{i} was {_describe_state(then)}, now {_describe_state(state)}"
                 for i, then, state in zip(pending.ids, pending.states, now) if then != state]
        if moved:
            return (f"the memory changed since you pressed {pending.action.capitalize()} (change "
                    f"#{pending.change_counter} -> #{memory.change_counter}): exemplar " + "; ".join(moved))
    if selection is not None and tuple(sorted(int(i) for i in selection)) != tuple(sorted(pending.ids)):
        now = id_list(sorted(int(i) for i in selection)) or "nothing"
        return (f"the selection changed since you pressed {pending.action.capitalize()}: it was for "
                f"{id_list(pending.ids)}, now {now} is selected")
    return ""


def carry_out(memory: VisualMemory, pending: PendingChange, change: Callable[[], object],
              selection: Optional[Sequence[int]] = None) -> object:
    """Run `change` (which does `pending`'s action) if `pending` still holds, atomically with the check.

    Raises:
        StaleConfirmationError: the selection or those exemplars changed; `change` was not run.
    """
    with memory.exemplars.exclusive():
        reason = stale_reason(memory, pending, selection)
        if reason:
            raise StaleConfirmationError(f"Nothing was changed: {reason}. Check and press "
                                         f"{pending.action.capitalize()} again.")
        return change()
