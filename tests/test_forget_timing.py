"""Unlearning times each deletion on its own, as the paper states its figure (issue 24 item 13)."""

import pytest

from vmem_core.memory.exemplars import Exemplars

from .test_neighbour_set import blobs  # noqa: F401 - the fixture


def test_forgetting_one_at_a_time_times_each_and_says_what_took_effect(blobs, monkeypatch):
    from vmem_core.analysis.unlearning import delete_one_at_a_time
    from vmem_core.errors import VmemError

    memory, _ = blobs
    ticks = iter(range(100))
    assert delete_one_at_a_time(memory, [1, 2, 3], clock=lambda: next(ticks)) == [1, 1, 1]
    with pytest.raises(VmemError, match=r"^Nothing changed: no live exemplar with id\(s\) 2$"):
        delete_one_at_a_time(memory, [4, 2])
    assert memory.table.class_indices([4])[0] >= 0  # checked before any deletion
    delete = Exemplars.delete

    def racing(self, ids):  # another session deletes 6 just before this one does
        if list(ids) == [6]:
            raise VmemError("no live exemplar with id(s) 6")
        return delete(self, ids)

    monkeypatch.setattr(Exemplars, "delete", racing)
    with pytest.raises(VmemError, match=r"^Forgot 1 exemplar\(s\) \(5\), then id 6 failed"):
        delete_one_at_a_time(memory, [5, 6])
