"""The live exemplars' labels as arrays: id -> class index -> label, the one place that map is built."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np

from .errors import UnknownIdError
from .voting import class_names, label_classes


@dataclass(frozen=True)
class LabelTable:
    """The live exemplars' labels at one moment. Replaced whole on every change, so a reader that takes it once sees
    one consistent state even while another thread relabels."""

    ids: np.ndarray  # live ids, sorted
    classes: np.ndarray  # class index of each id
    labels: tuple[str, ...]  # class index -> label, sorted

    @classmethod
    def from_rows(cls, ids: np.ndarray, labels: Sequence[str]) -> "LabelTable":
        names = class_names(labels)
        return cls(np.asarray(ids, dtype=np.int64), label_classes(labels, names), names)

    def without(self, ids) -> "LabelTable":
        """This table less the given ids (labels left with no exemplar are dropped)."""
        gone = np.asarray(list(ids), dtype=np.int64)
        where = np.clip(np.searchsorted(self.ids, gone), 0, max(len(self.ids) - 1, 0))
        keep = np.ones(len(self.ids), dtype=bool)
        keep[where[self.ids[where] == gone] if len(self.ids) else []] = False  # ids are sorted: no hashing needed
        used = np.flatnonzero(np.bincount(self.classes[keep], minlength=len(self.labels)))
        if len(used) == len(self.labels):
            return LabelTable(self.ids[keep], self.classes[keep], self.labels)
        remap = np.full(len(self.labels), -1, dtype=np.int64)
        remap[used] = np.arange(len(used))
        return LabelTable(self.ids[keep], remap[self.classes[keep]], tuple(self.labels[i] for i in used))

    def merged(self, ids, labels: Sequence[str]) -> "LabelTable":
        """This table plus rows (ids not already in it), re-indexed if a new label sorts among the old ones."""
        names = class_names([*self.labels, *labels])
        remap = label_classes(self.labels, names)
        all_ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        all_classes = np.concatenate([remap[self.classes] if len(self.classes) else self.classes,
                                      label_classes(labels, names)])
        order = np.argsort(all_ids, kind="stable")
        return LabelTable(all_ids[order], all_classes[order], names)

    def class_indices(self, ids) -> np.ndarray:
        """Class index of each id; -1 for ids that are not live."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        dense = self._dense
        if dense is not None and ids.size > 64:
            return dense[np.where((ids < 0) | (ids >= len(dense)), len(dense) - 1, ids)].astype(np.int64)
        where = np.clip(np.searchsorted(self.ids, ids), 0, len(self.ids) - 1)
        return np.where(self.ids[where] == ids, self.classes[where], -1)

    @cached_property
    def _dense(self):
        """id -> class index as one array over 0..max id (-1 where not live; the last slot stands for every id
        outside), so that the class of each of a whole neighbour table's ids (60,000 x 50) is a gather, not a binary
        search each (~10x faster); None where the ids are too sparse for it. Built once per table (tables are
        replaced whole on every change, never mutated)."""
        top = int(self.ids[-1]) if len(self.ids) else -1
        if top < 0 or int(self.ids[0]) < 0 or top > 16 * len(self.ids) + 2**20:
            return None
        dense = np.full(top + 2, -1, dtype=np.int32)
        dense[self.ids] = self.classes
        return dense

    def label_of(self, exemplar_id: int) -> str:
        """The label of a live exemplar (UnknownIdError if it is not one)."""
        cls = int(self.class_indices([exemplar_id])[0])
        if cls < 0:
            raise UnknownIdError(f"no live exemplar with id {exemplar_id}")
        return self.labels[cls]
