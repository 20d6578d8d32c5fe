"""Any open_clip architecture as an encoder, from a pretrained tag (needs the hub) or a local checkpoint file, on the
process's device (vmem_core.devices; bfloat16 autocast on a GPU, see encoders.on_device)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..devices import resolve_device
from ..errors import EncoderError
from ..storage.atomic import sha256_file
from .base import BatchedEncoder, l2_normalise

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class PixelsBeforeToTensor:
    """The PIL transforms of an open_clip preprocess up to its ToTensor (resize, crop, mode), giving uint8 (h, w, 3):
    the pixel step decoding workers run (encoders.base). Picklable: torchvision transforms and a module class."""

    def __init__(self, transforms) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Image.Image) -> np.ndarray:
        for transform in self.transforms:
            image = transform(image)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def split_at_to_tensor(preprocess) -> tuple[list, list] | None:
    """(the transforms before ToTensor, those after it) of a torchvision Compose, or None without a ToTensor."""
    transforms = list(getattr(preprocess, "transforms", []))
    for position, transform in enumerate(transforms):
        if type(transform).__name__.endswith("ToTensor"):  # ToTensor, or open_clip's MaybeToTensor
            return transforms[:position], transforms[position + 1:]
    return None


def _import_open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise EncoderError(
            f"open_clip encoders need open_clip_torch and torchvision ({exc}): pip install -r requirements.txt"
        ) from None
    return open_clip


class OpenClipEncoder(BatchedEncoder):
    """The image tower of an open_clip model; `encode_text` embeds text into the same space."""

    def __init__(self, arch: str, pretrained: str, threads: int | None = None, device: str | None = None) -> None:
        open_clip = _import_open_clip()
        import torch

        from .on_device import CUDA_BATCH_SIZE, place

        if arch not in open_clip.list_models():
            raise EncoderError(
                f"unknown open_clip architecture {arch!r}; accepted: one of open_clip.list_models() "
                f"(e.g. {', '.join(open_clip.list_models()[:4])}, ...), or one registered with "
                "open_clip.add_model_config(path)"
            )
        self.name = f"open_clip:{arch}:{pretrained}"
        self.threads = threads or os.cpu_count() or 1
        checkpoint = Path(pretrained).expanduser()
        if checkpoint.is_file():
            self.identity = f"open_clip:{arch}:sha256:{sha256_file(checkpoint)[:16]}"
            source = str(checkpoint)
        elif os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES):
            raise EncoderError(f"open_clip checkpoint {pretrained!r}: no such file")
        else:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            if pretrained not in tags:
                raise EncoderError(
                    f"{pretrained!r} is neither a pretrained tag of {arch} nor a checkpoint file; "
                    f"accepted tags: {', '.join(tags) or 'none'}, or a path to a local checkpoint"
                )
            self.identity = self.name
            source = pretrained
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=source, device="cpu")
        except EncoderError:
            raise
        except Exception as exc:
            if source == pretrained and not checkpoint.is_file():
                raise EncoderError(
                    f"could not fetch pretrained weights {pretrained!r} for {arch} ({type(exc).__name__}: {exc}). "
                    "Without access to the model hub, download the checkpoint on a machine that has it and pass "
                    f"its path instead: open_clip:{arch}:/path/to/checkpoint.pt"
                ) from None
            raise EncoderError(f"could not load open_clip checkpoint {source!r} into {arch}: {exc}") from None
        self.device = resolve_device(device)
        self._model = place(model, self.device)
        if self.device.is_cuda:
            self.batch_size = CUDA_BATCH_SIZE
        self._preprocess = preprocess
        self._split = split_at_to_tensor(preprocess)
        self._tokenizer = open_clip.get_tokenizer(arch)
        with torch.inference_mode():
            probe = self._model.encode_image(torch.zeros(1, *self._input_shape(), device=self.device.torch()))
        self.dim = int(probe.shape[-1])
        self._torch = torch

    def _input_shape(self) -> tuple[int, int, int]:
        size = self._model.visual.image_size
        height, width = (size, size) if isinstance(size, int) else size
        return 3, height, width

    def encode_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        from .on_device import features, precision, to_device

        torch = self._torch
        torch.set_num_threads(self.threads)
        with torch.inference_mode(), precision(self.device):
            batch = to_device(torch.stack([self._preprocess(image) for image in images]), self.device)
            return features(self._model.encode_image(batch))

    def pixel_step(self):
        return None if self._split is None else PixelsBeforeToTensor(self._split[0])

    def encode_pixel_batch(self, pixels) -> np.ndarray:
        from .on_device import features, precision, to_device

        torch = self._torch
        torch.set_num_threads(self.threads)
        tensor = torch.from_numpy(pixels) if isinstance(pixels, np.ndarray) else pixels
        batch = tensor.permute(0, 3, 1, 2).float().div(255)  # what ToTensor does to one image, for the batch
        for transform in self._split[1]:  # Normalize: per channel, so a batch takes it as an image does
            batch = transform(batch)
        with torch.inference_mode(), precision(self.device):
            return features(self._model.encode_image(to_device(batch.contiguous(), self.device)))

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Unit rows for texts, comparable with the image features (CLIP's shared space)."""
        from .on_device import features, precision

        torch = self._torch
        with torch.inference_mode(), precision(self.device):
            tokens = self._tokenizer(list(texts)).to(self.device.torch())
            return l2_normalise(features(self._model.encode_text(tokens)))
