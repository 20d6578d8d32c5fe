"""Decoding JPEGs in batches with torchvision where the encoder runs: nvJPEG on a GPU, libjpeg on the CPU (its twin).

Once encoding runs on a GPU, decoding on the host's cores is the bottleneck (RESEARCH.md: ~3,000 photo JPEGs/s on 16
cores against 26,700 images/s of EfficientNet-Lite0 on an H200), so a build on CUDA sends plain JPEGs' bytes to the
device and decodes, resizes and crops them there. "Plain" is what a batched decoder gives as PIL would: baseline
JPEG in RGB or greyscale without an EXIF rotation. CMYK, progressive and rotated JPEGs, and every other format, are
decoded by PIL (ingest.images), which applies the EXIF orientation; so does any JPEG this decoder refuses.

The resize reproduces the encoders' PIL step (shorter side to `size` bicubic, long side rounded, centre crop with
the offset rounded down) with torchvision's antialiased bicubic, whose kernel is PIL's; decoders and resamplers still
differ by a grey level here and there (on the CPU: one level on ~0.3% of the pixels, embeddings at cosine >= 0.99999
against PIL's; nvJPEG's inverse DCT differs a little more), so embeddings agree with the PIL path closely, not
exactly (tests/test_decode.py).

torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec; they still work, and the GPU machine
has torchvision 0.26. Moving to TorchCodec's decoders is the way on once it is installed there.
"""

from __future__ import annotations

from typing import Optional, Sequence

from PIL import Image

EXIF_ORIENTATION = 0x0112


def batch_decodable(opened: Image.Image) -> bool:
    """Whether a lazily opened image is a JPEG that the batched decoder gives as PIL would."""
    if opened.format != "JPEG" or opened.mode not in ("RGB", "L"):
        return False
    if opened.info.get("progressive") or opened.info.get("progression"):
        return False  # nvJPEG's batched hardware path takes baseline JPEGs only
    try:
        orientation = opened.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - an unreadable EXIF block: PIL's path copes and says so
        return False
    return orientation in (None, 1)


def available() -> bool:
    """Whether torchvision (which the batched decoder needs) imports here."""
    try:
        import torchvision.io  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or a build that does not match torch: decode with PIL
        return False
    return True


def decode_and_crop(datas: Sequence[bytes], size: int, device: str) -> list:
    """Each JPEG decoded on `device` ("cpu", "cuda:0"), resized and centre-cropped to uint8 (size, size, 3) there;
    None in place of one the decoder refuses (the caller decodes it with PIL, which reports it if it is bad)."""
    import warnings

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29's notice (see the module docstring)
        try:
            decoded: list[Optional[object]] = list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # one bad file fails the whole batch: find it by decoding each alone
            decoded = []
            for data in encoded:
                try:
                    decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    decoded.append(None)
    return [None if image is None else resize_and_crop(image, size) for image in decoded]


def resize_and_crop(image, size: int):
    """A uint8 (3, h, w) tensor -> uint8 (size, size, 3): the encoders' PIL geometry (encoders.efficientnet
    crop_pixels) on the tensor's device."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    height, width = image.shape[-2:]
    scale = size / min(width, height)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    resized = resize(image, [new_height, new_width], interpolation=InterpolationMode.BICUBIC, antialias=True)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return resized[:, top:top + size, left:left + size].permute(1, 2, 0)


def stack_on(device: str, pixels: Sequence) -> object:
    """One uint8 (n, h, w, 3) tensor on `device` from pixels decoded there (tensors) or on the host (numpy): the
    host's go over in one copy, as uint8 (a quarter of the bytes of the float32 batch the network takes)."""
    import numpy as np
    import torch

    on_host = [i for i, p in enumerate(pixels) if isinstance(p, np.ndarray)]
    if not on_host:
        return torch.stack(list(pixels))
    copied = torch.from_numpy(np.stack([pixels[i] for i in on_host])).to(device)
    if len(on_host) == len(pixels):
        return copied
    out = list(pixels)
    for row, i in enumerate(on_host):
        out[i] = copied[row]
    return torch.stack(out)
