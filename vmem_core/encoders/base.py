"""What every encoder shares: the `Encoder` protocol, batching with progress, and L2 normalisation.

An encoder may also split its preprocessing in two (`pixel_step` and `encode_pixels`): the resize and crop, which
cost CPU time and can run in a decoding worker process, and the rest (scaling, the network), which runs where the
encoder is. Workers then send uint8 pixels, a quarter of the bytes of the float32 batch the network takes.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

ProgressCallback = Callable[[int, int], None]
# image -> the uint8 (height, width, 3) pixels the network is given (after resize and crop); picklable by reference
PixelStep = Callable[[Image.Image], np.ndarray]
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
    # the square side of `pixel_step`'s output when that step is "shorter side resized to it (bicubic), centre crop":
    # the geometry a GPU JPEG decode reproduces on the device (ingest.jpeg_batch); None: the encoder's is another
    input_size: Optional[int] = None

    def encode_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError

    def pixel_step(self) -> Optional[PixelStep]:
        """The part of preprocessing that decoding workers can do: a picklable function image -> uint8 (h, w, 3)
        pixels that `encode_pixels` takes, with `encode_pixels(stack(step(im) for im in ims))` equal to
        `encode(ims)`. None (the default) when the encoder takes PIL images only."""
        return None

    def encode_pixel_batch(self, pixels) -> np.ndarray:
        """Features (not normalised) of a uint8 (n, h, w, 3) batch from `pixel_step`: a numpy array, or a torch
        tensor (on the encoder's device, e.g. decoded there). Encoders with a `pixel_step` implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no pixel step; encode PIL images with encode()")

    def encode_pixels(self, pixels, batch_size: Optional[int] = None,
                      progress: Optional[ProgressCallback] = None) -> np.ndarray:
        """Unit rows for a uint8 (n, h, w, 3) batch of `pixel_step` outputs, batched as `encode` batches images."""
        return self._batched(len(pixels), batch_size, progress, lambda start, stop: self.encode_pixel_batch(
            pixels[start:stop]))

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
        images = list(images)
        return self._batched(len(images), batch_size, progress, lambda start, stop: self.encode_batch(
            [image.convert("RGB") for image in images[start:stop]]))

    def _batched(self, count: int, batch_size: Optional[int], progress: Optional[ProgressCallback],
                 encode_slice: Callable[[int, int], np.ndarray]) -> np.ndarray:
        if batch_size is None:
            batch_size = self.batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((count, self.dim), dtype=np.float32)
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            out[start:stop] = encode_slice(start, stop)
            if progress is not None:
                progress(stop, count)
        return l2_normalise(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"
