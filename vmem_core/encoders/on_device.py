"""Running an encoder's torch network on the chosen device (vmem_core.devices).

On CUDA the network runs in bfloat16 autocast with channels_last weights (2x the images/s of float32 on an H200 for
EfficientNet-Lite0, issue 14), batches are copied from pinned host memory without blocking, and features come back
as float32: a memory stores float32 whatever device encoded it. On the CPU nothing changes: the network runs as
before, in float32 (and EfficientNet's default CPU path is onnxruntime, not this).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..devices import Device

CUDA_BATCH_SIZE = 256  # images per forward pass on a GPU: what issue 14's H200 figures were measured at


def place(network: torch.nn.Module, device: Device) -> torch.nn.Module:
    """The network moved to `device`, in eval mode; channels_last on CUDA, where its convolutions run faster so."""
    network = network.eval().to(device.torch())
    if device.is_cuda:
        network = network.to(memory_format=torch.channels_last)
    return network


def to_device(batch, device: Device) -> torch.Tensor:
    """A float32 (n, c, h, w) batch on `device` (channels_last on CUDA), copied from pinned memory there."""
    tensor = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
    if not device.is_cuda:
        return tensor
    if not tensor.is_cuda:  # pixels decoded on the GPU (ingest.jpeg_batch) are there already
        tensor = tensor.pin_memory()
    tensor = tensor.to(device.torch(), non_blocking=True)
    return tensor.contiguous(memory_format=torch.channels_last)


def pixels_to_device(pixels: np.ndarray, device: Device) -> torch.Tensor:
    """uint8 pixels (n, h, w, 3) from a decoding worker on `device`, copied as they are (scaling to float happens
    there: a quarter of the bytes over the bus)."""
    return torch.from_numpy(pixels).pin_memory().to(device.torch(), non_blocking=True)


def precision(device: Device):
    """The autocast context a forward pass runs in: bfloat16 on CUDA, none on the CPU."""
    if device.is_cuda:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def features(output: torch.Tensor) -> np.ndarray:
    """A forward pass's output as float32 numpy on the host."""
    return output.float().cpu().numpy()
