"""What every encoder shares: the `Encoder` protocol, batching with progress, and L2 normalisation."""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

ProgressCallback = Callable[[int, int], None]
DEFAULT_ENCODER = "efficientnet-lite0"
DEFAULT_BATCH_SIZE = 32


@runtime_checkable
class Encoder(Protocol):
    """What a memory needs from an encoder."""

    name: str  # the name it was resolved from, enough to load it again
    identity: str  # name plus a fingerprint of the weights: two encoders with equal identity give equal features
    dim: int

    def encode(
        self,
        images: Sequence[Image.Image],
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[ProgressCallback] = None,
    ) -> np.ndarray: ...


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32.

    >>> l2_normalise(np.array([[3.0, 4.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


class BatchedEncoder:
    """Batching, progress and normalisation shared by every encoder; subclasses implement `encode_batch`."""

    name: str
    identity: str
    dim: int
    batch_size: int = DEFAULT_BATCH_SIZE  # images per forward pass when `encode` is not told (larger on a GPU)

    def encode_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError

    def encode(
        self,
        images: Sequence[Image.Image],
        batch_size: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> np.ndarray:
        """Encode RGB images into an (n, dim) float32 array of unit rows.

        Args:
            images: PIL images (any size; converted to RGB).
            batch_size: images per forward pass (default: the encoder's `batch_size`).
            progress: called as progress(done, total) after each batch.
        """
        if batch_size is None:
            batch_size = self.batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        images = list(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            batch = [image.convert("RGB") for image in images[start:start + batch_size]]
            out[start:start + len(batch)] = self.encode_batch(batch)
            if progress is not None:
                progress(start + len(batch), len(images))
        return l2_normalise(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"
