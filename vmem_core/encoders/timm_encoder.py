"""Any timm architecture as an encoder (`timm:<arch>:<pretrained tag or checkpoint path>`), e.g. the DINOv2 ladder the
paper's headline figures use (`timm:vit_small_patch14_dinov2:lvd142m`, base, large, giant).

Loaded through timm's own API: `timm.create_model(arch, pretrained=True, num_classes=0)` gives the pooled features
(no classifier), from the hub for a tag or from a local file (`pretrained_cfg_overlay=dict(file=...)`, which applies
the architecture's own checkpoint conversion); `timm.data.resolve_data_config` and `create_transform` give its input
size, resize, crop and normalisation. It runs on the process's device (vmem_core.devices; bfloat16 autocast on a GPU,
see encoders.on_device), with the conventions of encoders.openclip: a file's identity is its SHA-256, a tag's is the
tag itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..devices import resolve_device
from ..errors import EncoderError
from ..storage.atomic import sha256_file
from .base import BatchedEncoder

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_TIMM_LOADER_LOG = "timm.models._builder"  # where timm reports the keys a checkpoint did not fill or did not match


def _import_timm():
    try:
        import timm
        import timm.data
    except ImportError as exc:
        raise EncoderError(f"timm encoders need timm and torchvision ({exc}): pip install -r requirements.txt") from None
    return timm


def pretrained_tags(timm, arch: str) -> list[str]:
    """The pretrained tags timm knows for `arch`, e.g. ['lvd142m'] for vit_small_patch14_dinov2."""
    return [name.partition(".")[2] for name in timm.list_pretrained(f"{arch}.*")]


class _KeysThatDidNotFit(logging.Handler):
    """Collects timm's reports of missing and unexpected keys while it loads weights.

    timm loads a checkpoint non-strictly whenever it drops the classifier (num_classes=0, always here) and only logs
    what did not fit, so a checkpoint of another architecture would leave the network at its random initialisation
    without an error. These reports are what lets the encoder refuse it instead."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logging.INFO)
        self.reports: list[str] = []
        # the logger is lowered to INFO to hear these reports, and stops passing records up while it is: a record
        # goes on to the handlers above only at the level the logger had before (timm's "Loading pretrained weights
        # from file ..." showed on every command, yet shows with -v, which lowers that level)
        self.parent, self.passed_level = logger.parent, logger.getEffectiveLevel()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(("Missing keys", "Unexpected keys")):
            self.reports.append(message)
        if record.levelno >= self.passed_level and self.parent is not None:
            self.parent.callHandlers(record)  # as propagation does: the handlers above, not their loggers' filters


@contextlib.contextmanager
def _watch_loading():
    logger = logging.getLogger(_TIMM_LOADER_LOG)
    handler, level, propagate = _KeysThatDidNotFit(logger), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


class TimmEncoder(BatchedEncoder):
    """The pooled features of a timm model without its classifier (`num_classes=0`)."""

    def __init__(self, arch: str, pretrained: str, threads: int | None = None, device: str | None = None) -> None:
        timm = _import_timm()
        import torch

        from .on_device import CUDA_BATCH_SIZE, place

        if "." in arch and timm.is_model(arch):
            base, _, tag = arch.partition(".")
            raise EncoderError(f"timm architecture {arch!r} carries a tag; give the tag or a checkpoint path after the "
                               f"second colon instead: timm:{base}:{tag}")
        if not timm.is_model(arch):
            raise EncoderError(
                f"unknown timm architecture {arch!r}; accepted: one of timm.list_models() "
                f"(e.g. {', '.join(timm.list_models('*dinov2*')[:4])}, ...)"
            )
        self.name = f"timm:{arch}:{pretrained}"
        self.threads = threads or os.cpu_count() or 1
        checkpoint = Path(pretrained).expanduser()
        if checkpoint.is_file():
            self.identity = f"timm:{arch}:sha256:{sha256_file(checkpoint)[:16]}"
            model_name, options = arch, dict(pretrained_cfg_overlay=dict(file=str(checkpoint)))
        elif os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
            raise EncoderError(f"timm checkpoint {pretrained!r}: no such file")
        else:
            tags = pretrained_tags(timm, arch)
            if pretrained not in tags:
                raise EncoderError(
                    f"{pretrained!r} is neither a pretrained tag of {arch} nor a checkpoint file; "
                    f"accepted tags: {', '.join(tags) or 'none'}, or a path to a local checkpoint"
                )
            self.identity = self.name
            model_name, options = f"{arch}.{pretrained}", {}
        try:
            with _watch_loading() as loading:
                model = timm.create_model(model_name, pretrained=True, num_classes=0, **options)
        except Exception as exc:
            if not checkpoint.is_file():
                raise EncoderError(
                    f"could not fetch pretrained weights {pretrained!r} for timm architecture {arch} "
                    f"({type(exc).__name__}: {str(exc)[:300]}). Without access to the model hub, download the "
                    f"checkpoint on a machine that has it and pass its path instead: timm:{arch}:/path/to/checkpoint.pth"
                ) from None
            raise EncoderError(f"could not load timm checkpoint {pretrained!r} into {arch}: {exc}") from None
        if loading.reports:
            raise EncoderError(f"timm checkpoint {pretrained!r} does not fit {arch}: {loading.reports[0][:400]}")
        config = timm.data.resolve_data_config({}, model=model)
        self._preprocess = timm.data.create_transform(**config)
        self.input_size = tuple(config["input_size"])
        self.device = resolve_device(device)
        self._model = place(model, self.device)
        if self.device.is_cuda:
            self.batch_size = CUDA_BATCH_SIZE
        with torch.inference_mode():
            probe = self._model(torch.zeros(1, *self.input_size, device=self.device.torch()))
        self.dim = int(probe.shape[-1])
        self._torch = torch

    def encode_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        from .on_device import features, precision, to_device

        torch = self._torch
        torch.set_num_threads(self.threads)
        with torch.inference_mode(), precision(self.device):
            batch = to_device(torch.stack([self._preprocess(image) for image in images]), self.device)
            return features(self._model(batch))
