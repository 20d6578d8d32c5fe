"""The embedding cache of IDX image files: whole-file entries, and entries for the first N images that later reads of
N or fewer reuse."""

import gzip

import numpy as np
import pytest

from vmem_core.errors import DatasetError
from vmem_core.ingest.embedding_cache import cache_path, idx_embeddings

from .helpers import PixelEncoder


class CountingEncoder(PixelEncoder):
    """The pixel encoder, counting the images it is asked to encode (a cache hit encodes none)."""

    def __init__(self):
        self.encoded = 0

    def encode_batch(self, images):
        self.encoded += len(images)
        return super().encode_batch(images)


def write_idx(path, pixels: np.ndarray) -> None:
    header = bytes([0, 0, 8, pixels.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in pixels.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + pixels.astype(np.uint8).tobytes())


@pytest.fixture
def images_file(tmp_path, monkeypatch):
    monkeypatch.setenv("VMEM_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "images-idx3-ubyte.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 256, size=(30, 12, 12)))
    return path


def test_a_prefix_is_cached_and_serves_shorter_prefixes(images_file):
    encoder = CountingEncoder()
    first20 = idx_embeddings(encoder, images_file, limit=20)
    assert first20.shape == (20, 64) and encoder.encoded == 20
    assert cache_path(encoder, images_file, 20).exists() and not cache_path(encoder, images_file).exists()
    first10 = idx_embeddings(encoder, images_file, limit=10)
    assert encoder.encoded == 20 and np.array_equal(first10, first20[:10])
    again = idx_embeddings(encoder, images_file, limit=20)
    assert encoder.encoded == 20 and np.array_equal(again, first20)


def test_a_longer_prefix_is_encoded_and_the_whole_file_serves_every_prefix(images_file):
    encoder = CountingEncoder()
    idx_embeddings(encoder, images_file, limit=10)
    first25 = idx_embeddings(encoder, images_file, limit=25)  # the 10-image entry cannot cover 25
    assert encoder.encoded == 35 and first25.shape == (25, 64)
    whole = idx_embeddings(encoder, images_file, limit=30)  # as many as the file holds: the whole file's entry
    assert encoder.encoded == 65 and cache_path(encoder, images_file).exists()
    assert not cache_path(encoder, images_file, 30).exists()
    assert np.array_equal(whole[:25], first25)
    assert np.array_equal(idx_embeddings(encoder, images_file, limit=5), whole[:5]) and encoder.encoded == 65
    assert np.array_equal(idx_embeddings(encoder, images_file), whole) and encoder.encoded == 65


def test_entries_are_keyed_by_the_encoder(images_file):
    from .helpers import OtherPixelEncoder

    idx_embeddings(CountingEncoder(), images_file, limit=10)
    assert cache_path(OtherPixelEncoder(), images_file, 10) != cache_path(PixelEncoder(), images_file, 10)
    assert not cache_path(OtherPixelEncoder(), images_file, 10).exists()


def test_a_limit_below_one_is_refused(images_file):
    with pytest.raises(DatasetError, match="limit must be at least 1 image, got 0"):
        idx_embeddings(CountingEncoder(), images_file, limit=0)
