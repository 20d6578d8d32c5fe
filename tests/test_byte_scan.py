"""The one-pass byte scan finds exactly what one `find` per pattern per file finds."""

from __future__ import annotations

import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem_core.storage.byte_scan import PatternSet, byte_scan, rows_holding


def finds(data: bytes, patterns) -> set[int]:
    return {i for i, (_, p) in enumerate(patterns) if data.find(p) >= 0}


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=0, max_size=600), picks=st.lists(st.tuples(st.integers(0, 600), st.integers(1, 40)),
                                                                  max_size=6),
       strangers=st.lists(st.binary(min_size=1, max_size=30), max_size=4))
def test_finds_what_find_finds_at_every_offset(data, picks, strangers):
    patterns = [(f"p{i}", data[a:a + n]) for i, (a, n) in enumerate(picks) if data[a:a + n]]
    patterns += [(f"s{i}", s) for i, s in enumerate(strangers)]
    assert PatternSet(patterns).find_in(data) == finds(data, patterns)
    assert set(PatternSet(patterns).one_pass(data)) == finds(data, patterns)


def test_patterns_across_block_boundaries_and_in_zero_runs(monkeypatch):
    import vmem_core.storage.byte_scan as scan

    monkeypatch.setattr(scan, "BLOCK_WORDS", 8)
    rng = np.random.default_rng(0)
    vector = rng.random(16).astype(np.float32).tobytes()
    zeros_then = bytes(8) + vector[8:]  # an embedding that starts with two zeros
    data = bytearray(os.urandom(1000)) + bytes(300)
    for at, pattern in ((61, vector), (127, zeros_then), (1290, vector[:10])):
        data[at:at + len(pattern)] = pattern
    patterns = [("v", vector), ("z", zeros_then), ("tail", vector[:10]), ("absent", rng.random(16).tobytes())]
    assert set(PatternSet(patterns).one_pass(bytes(data))) == {0, 1, 2}
    assert PatternSet(patterns).find_in(bytes(data)) == {0, 1, 2}


def test_byte_scan_names_file_and_pattern(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"xx" + b"secret-vector-bytes" + b"yy")
    (tmp_path / "b.bin").write_bytes(b"nothing here")
    (tmp_path / "empty").write_bytes(b"")
    assert byte_scan(tmp_path, [("e", b"secret-vector-bytes"), ("t", b"thumbnail!")]) == [("sub/a.bin", "e")]


def test_rows_holding_finds_byte_identical_rows_only():
    rng = np.random.default_rng(1)
    stored = rng.random((50, 8)).astype(np.float32)
    stored[:, 0] = 0  # a shared first word must not make rows equal
    wanted = [stored[7].copy(), stored[30].copy(), np.nextafter(stored[3], 2).astype(np.float32)]
    assert rows_holding(stored, wanted).tolist() == [7, 30]


def test_rows_holding_compares_whole_rows_not_just_the_hashed_columns():
    rng = np.random.default_rng(2)
    stored = rng.random((300, 64)).astype(np.float32)
    stored[:150, ::2] = 0.5  # half the rows alike in many columns, the hashed ones among them
    near = stored[3].copy()
    near[1] = np.nextafter(near[1], 2)  # differs outside the hashed columns only
    near_too = stored[200].copy()
    near_too[-2] = np.nextafter(near_too[-2], 2)
    assert rows_holding(stored, [near, near_too, stored[10].copy(), stored[299].copy()]).tolist() == [10, 299]


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=8, max_size=400), picks=st.lists(st.tuples(st.integers(0, 400), st.integers(8, 30)),
                                                                  min_size=1, max_size=5))
def test_first_positions_are_finds_answers(data, picks):
    patterns = [(f"p{i}", data[a:a + n]) for i, (a, n) in enumerate(picks) if len(data[a:a + n]) >= 1]
    expected = {i: data.find(p) for i, (_, p) in enumerate(patterns) if data.find(p) >= 0}
    assert PatternSet(patterns).first_positions(data) == expected
    assert PatternSet(patterns).one_pass(data) == expected
