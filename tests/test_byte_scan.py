"""The byte scan finds exactly what one `find` per pattern per file finds."""

from __future__ import annotations


import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem_core.storage.byte_scan import PatternSet, byte_scan


def finds(data: bytes, patterns) -> set[int]:
    return {i for i, (_, p) in enumerate(patterns) if data.find(p) >= 0}


def first_finds(data: bytes, patterns) -> dict[int, int]:
    return {i: data.find(p) for i, (_, p) in enumerate(patterns) if data.find(p) >= 0}


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=0, max_size=600), picks=st.lists(st.tuples(st.integers(0, 600), st.integers(1, 40)),
                                                                  max_size=6),
       strangers=st.lists(st.binary(min_size=1, max_size=30), max_size=4))
def test_short_patterns_find_what_find_finds(data, picks, strangers):
    patterns = [(f"p{i}", data[a:a + n]) for i, (a, n) in enumerate(picks) if data[a:a + n]]
    patterns += [(f"s{i}", s) for i, s in enumerate(strangers)]
    assert PatternSet(patterns).first_positions(data) == first_finds(data, patterns)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 6000), alphabet=st.sampled_from([2, 5, 256]),
       picks=st.lists(st.tuples(st.floats(0, 1), st.integers(8, 900)), min_size=1, max_size=6),
       zero_runs=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 200)), max_size=4),
       copies=st.integers(0, 3), scanned=st.sampled_from([None, 1_000, 10**9]))
def test_sampled_words_find_what_find_finds_at_every_offset(seed, size, alphabet, picks, zero_runs, copies, scanned):
    """Long patterns are found by sampling every stride-th aligned word: on any data (few-valued bytes too, zero runs
    inside patterns and around them, patterns repeated at other offsets), the first position of each is find's."""
    rng = np.random.default_rng(seed)
    data = bytearray(rng.integers(0, alphabet, size, dtype=np.uint8).tobytes())
    for where, length in zero_runs:
        at = int(where * size)
        data[at:at + length] = bytes(min(length, size - at))
    patterns = [(f"p{i}", bytes(data[int(w * size):int(w * size) + n])) for i, (w, n) in enumerate(picks)]
    patterns = [(name, p) for name, p in patterns if p]
    for _ in range(copies):  # a pattern again further on, at another alignment
        if patterns and size:
            pattern = patterns[int(rng.integers(len(patterns)))][1]
            at = int(rng.integers(size))
            data[at:at + len(pattern)] = pattern[:size - at]
    patterns.append(("stranger", rng.integers(0, 256, 300, dtype=np.uint8).tobytes()))
    data = bytes(data)
    prepared = PatternSet(patterns, scanned_bytes=scanned)  # the stride sized for a small scan or a huge one
    assert prepared.first_positions(data) == first_finds(data, patterns)
    assert prepared.find_in(data) == finds(data, patterns)


def test_an_embedding_is_found_by_sampling_wherever_it_starts():
    """A 1280-dimensional embedding (float32 and float16, zeros among its values) is searched by sampled words, not
    by find, and found at every one of the eight alignments."""
    rng = np.random.default_rng(0)
    vector = rng.random(1280).astype(np.float32)
    vector[100:140] = 0  # dead channels: a run of zero bytes inside the pattern
    patterns = [("f32", vector.tobytes()), ("f16", vector.astype(np.float16).tobytes())]
    prepared = PatternSet(patterns)
    assert prepared.found_with_find == [] and prepared.stride >= 16
    for shift in range(8):
        data = bytearray(rng.integers(0, 256, 40_000, dtype=np.uint8).tobytes()) + bytes(20_000)
        data[9_000 + shift:9_000 + shift + 5120] = patterns[0][1]
        data[30_000 + 3 * shift:30_000 + 3 * shift + 2560] = patterns[1][1]
        assert prepared.first_positions(bytes(data)) == {0: 9_000 + shift, 1: 30_000 + 3 * shift}
    assert prepared.find_in(bytes(60_000)) == set()


def test_byte_scan_names_file_and_pattern(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.bin").write_bytes(b"xx" + b"secret-vector-bytes" + b"yy")
    (tmp_path / "b.bin").write_bytes(b"nothing here")
    (tmp_path / "empty").write_bytes(b"")
    assert byte_scan(tmp_path, [("e", b"secret-vector-bytes"), ("t", b"thumbnail!")]) == [("sub/a.bin", "e")]
