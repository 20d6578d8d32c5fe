"""Which device encodes and searches: `auto`, `cpu`, `cuda` or `cuda:N`, chosen per process.

The choice comes from `--device` on the command line (set with `set_default_device`), else `$VMEM_DEVICE`, else
`auto`: the first CUDA device when torch sees one, the CPU otherwise. It is a property of the process, never of a
memory: vectors are stored as float32 whatever device made them, so a memory built on a GPU opens on a laptop.

This module, shared by the encoders and the exact backend, sits beside them rather than inside either, so that
neither layer imports the other for it. Parsing a spec never imports torch; resolving one does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

from .errors import VmemError

ENV_VAR = "VMEM_DEVICE"
ACCEPTED = "auto, cpu, cuda, cuda:N (N = 0, 1, ...)"
_SPEC = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

_chosen: Optional[str] = None


class DeviceError(VmemError):
    pass


def parse_device(text: str, source: str = "device") -> str:
    """A device spec in its canonical spelling, or a DeviceError naming the bad value and what is accepted.

    >>> parse_device(" CUDA:1 ")
    'cuda:1'
    >>> parse_device("gpu")
    Traceback (most recent call last):
    ...
    vmem_core.devices.DeviceError: device 'gpu' is not one vmem knows; accepted: auto, cpu, cuda, cuda:N (N = 0, 1, ...)
    """
    spec = str(text).strip().lower()
    if not _SPEC.match(spec):
        raise DeviceError(f"{source} {text!r} is not one vmem knows; accepted: {ACCEPTED}")
    return spec


def set_default_device(spec: Optional[str]) -> None:
    """Make `spec` this process's device (None: back to $VMEM_DEVICE or auto)."""
    global _chosen
    _chosen = None if spec is None else parse_device(spec)


def default_device() -> str:
    """This process's device spec, unresolved: the one set, else $VMEM_DEVICE, else 'auto'."""
    if _chosen is not None:
        return _chosen
    from_env = os.environ.get(ENV_VAR, "").strip()
    return parse_device(from_env, source=f"${ENV_VAR}") if from_env else "auto"


@dataclass(frozen=True)
class Device:
    """A resolved device: torch's name for it ('cpu', 'cuda:0') and what the hardware is called."""

    name: str
    description: str

    @property
    def is_cuda(self) -> bool:
        return self.name.startswith("cuda")

    def torch(self):
        import torch

        return torch.device(self.name)


def resolve_device(spec: Optional[str] = None) -> Device:
    """The device a spec names on this machine (None: the process default).

    Raises:
        DeviceError: a bad spec, or a CUDA device that torch does not see.
    """
    spec = default_device() if spec is None else parse_device(spec)
    if spec == "cpu" or (spec == "auto" and not cuda_driver_present()):
        return Device("cpu", "cpu")
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec == "auto":
        if not count:
            return Device("cpu", "cpu")
        spec = "cuda:0"
    index = int(spec.partition(":")[2] or 0)
    if index >= count:
        seen = f"{count} CUDA device(s) (cuda:0 .. cuda:{count - 1})" if count else "no CUDA device"
        raise DeviceError(f"device {spec!r} requested, but torch sees {seen}; accepted here: auto, cpu"
                          + (", cuda:N" if count else ""))
    return Device(f"cuda:{index}", torch.cuda.get_device_name(index))


def cuda_driver_present() -> bool:
    """Whether this machine may have a CUDA device, answered without importing torch (1.7 s and ~480 MiB): False only
    where it cannot (Linux without the NVIDIA driver's /proc entries and no WSL GPU bridge, or macOS); where torch is
    imported already, or the answer is not known, True and torch decides."""
    import sys
    from pathlib import Path

    if "torch" in sys.modules:
        return True
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        gpus = Path("/proc/driver/nvidia/gpus")
        return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/dxg").exists()
    return True


def memory_bytes(device: Device) -> int:
    """The accelerator memory of a CUDA device in bytes (0 for the CPU)."""
    if not device.is_cuda:
        return 0
    import torch

    return int(torch.cuda.get_device_properties(device.torch()).total_memory)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (the CUDA-only tests and benches skip without one)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def devices_in_use(encoder, backend: dict) -> dict:
    """What `vmem stats` says about devices: {"encode": {"device", "name"}, "search": {"device", "name"}}.

    `encoder` is the memory's encoder if it is loaded (else the device it would load on is named); `backend` the
    index backend's `describe()`. hnswlib and milvus-lite search on this machine's CPU, a Milvus server on itself.
    """
    if encoder is None:
        encoding = resolve_device()  # not loaded yet: where it will load
    else:
        encoding = getattr(encoder, "device", None)
        if not isinstance(encoding, Device):
            encoding = Device("cpu", "cpu")  # an encoder that does not choose a device runs on the CPU
    if "device" in backend:
        searching = {"device": backend["device"], "name": backend.get("device_name", backend["device"])}
    elif backend.get("name") == "milvus" and "://" in str(backend.get("location", "")):
        searching = {"device": "server", "name": backend["location"]}
    else:
        searching = {"device": "cpu", "name": "cpu"}
    return {"encode": {"device": encoding.name, "name": encoding.description}, "search": searching}


def where_text(where: dict) -> str:
    """One entry of `devices_in_use` as text: 'cuda:0 (NVIDIA H200)', or 'cpu' where the name adds nothing."""
    return where["device"] if where["name"] == where["device"] else f"{where['device']} ({where['name']})"


def devices_text(devices: dict) -> str:
    """`devices_in_use` in words, for `vmem stats` and the app's sidebar: 'encodes on cpu, searches on cpu'."""
    return f"encodes on {where_text(devices['encode'])}, searches on {where_text(devices['search'])}"
