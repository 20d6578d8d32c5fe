"""A pending change holds what it was asked for: a changed selection, or those exemplars changed by someone else,
stops it; changes to other exemplars do not."""

import pytest

from vmem_core.confirmation import StaleConfirmationError, ask, carry_out, stale_reason


def test_a_confirmation_carries_out_the_change_it_was_asked_for(memory):
    pending = ask(memory, "delete", [3, 1])
    assert pending.ids == (3, 1)
    assert pending.states == ((memory.table.label_of(3), False), (memory.table.label_of(1), False))
    assert f"#{memory.change_counter}" in pending.describe() and "3, 1" in pending.describe()
    carry_out(memory, pending, lambda: memory.exemplars.delete(pending.ids), selection=[1, 3])
    assert memory.table.class_indices([1, 3]).tolist() == [-1, -1]


def test_a_changed_selection_stops_it_and_says_so(memory):
    pending = ask(memory, "delete", [3])
    with pytest.raises(StaleConfirmationError, match=r"selection changed .* it was for 3, now 4 is selected"):
        carry_out(memory, pending, lambda: memory.exemplars.delete(pending.ids), selection=[4])
    assert memory.table.class_indices([3, 4]).min() >= 0  # neither deleted


@pytest.mark.parametrize("meanwhile, says", [
    (lambda m: m.exemplars.delete([3]), r"3 was live \('\w+'\), now deleted \('\w+'\)"),
    (lambda m: m.exemplars.relabel([3], "hat"), r"3 was live \('\w+'\), now live \('hat'\)"),
])
def test_another_session_changing_those_exemplars_stops_it(memory, meanwhile, says):
    pending = ask(memory, "delete", [3, 5])
    before = memory.change_counter
    meanwhile(memory)  # what a second session does between the press and the confirmation
    assert memory.change_counter > before
    with pytest.raises(StaleConfirmationError, match=rf"memory changed .*#{before} -> #{memory.change_counter}.*{says}"):
        carry_out(memory, pending, lambda: memory.exemplars.delete(pending.ids))
    assert memory.table.class_indices([5])[0] >= 0  # 5 was not deleted either


def test_changes_to_other_exemplars_do_not_stop_it(memory):
    pending = ask(memory, "relabel", [3], detail="hat")
    memory.exemplars.delete([7])
    assert stale_reason(memory, pending, selection=[3]) == ""
    carry_out(memory, pending, lambda: memory.exemplars.relabel(pending.ids, "hat"))
    assert memory.table.label_of(3) == "hat"


def test_nothing_to_confirm_is_an_error_naming_the_action(memory):
    with pytest.raises(ValueError, match="nothing to purge"):
        ask(memory, "purge", [])
