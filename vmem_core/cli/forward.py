"""Commands on a memory that another process (the app) holds: the client sends them there, the holder runs them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from ..errors import MemoryLockedError

from .table import HOSTABLE  # commands a process holding the memory can run for the CLI (vmem_core.cli.table)

_PATH_ARGUMENTS = ("memory", "data", "queries", "synonyms", "taxonomy", "ood_images", "certificate",
                   "verify_certificate", "out")


def memory_argument(args) -> Optional[str]:
    if args.command == "audit":
        return args.words[-1] if args.words else None
    return getattr(args, "memory", None)


def client_request(args) -> dict:
    """The parsed command as JSON, paths made absolute (the holder has another working directory)."""
    values = {key: value for key, value in vars(args).items() if key != "func"}
    for key in _PATH_ARGUMENTS:
        if isinstance(values.get(key), (str, Path)):  # --taxonomy is parsed as a Path, which JSON cannot carry
            values[key] = str(Path(values[key]).resolve())
    if isinstance(values.get("encoder"), str):
        values["encoder"] = _absolute_checkpoint(values["encoder"])
    if isinstance(values.get("images"), list):
        values["images"] = [str(Path(p).resolve()) for p in values["images"]]
    if args.command == "audit" and values["words"]:
        values["words"] = values["words"][:-1] + [str(Path(values["words"][-1]).resolve())]
    return values


def device_note(requested: Optional[str], memory) -> Optional[str]:
    """What a client's --device becomes in the process holding the memory: nothing, since that process loaded the
    encoder and the index once, on its own device, for every session and client (switching per command would load
    them again). None when the request names that device (or none); else the line that says where the command runs.
    The answers are the same on every device (vectors are stored as float32); only the speed differs."""
    from ..devices import DeviceError, devices_text, resolve_device

    if requested is None:
        return None
    where = memory.index.devices()
    used = {where["encode"]["device"]}
    if "device" in memory.index.backend.describe():  # the exact backend searches on a device; hnswlib on the CPU
        used.add(where["search"]["device"])
    try:
        wanted = resolve_device(requested).name
    except DeviceError:
        wanted = None  # e.g. cuda asked of an app on a machine without one
    if used == {wanted}:
        return None
    return (f"vmem: note: --device {requested} is not applied to a command the app runs: the app {devices_text(where)}"
            " (its own --device or $VMEM_DEVICE, set when it started); answers are the same on every device")


def _absolute_checkpoint(encoder: str) -> str:
    """timm:<arch>:<checkpoint> and open_clip:<arch>:<checkpoint> with a relative checkpoint path made absolute (a
    pretrained tag, which names no file here, is left as it is)."""
    family, _, rest = encoder.partition(":")
    arch, _, weights = rest.partition(":")
    if weights and not Path(weights).expanduser().is_absolute() and Path(weights).expanduser().exists():
        return f"{family}:{arch}:{Path(weights).expanduser().resolve()}"
    return encoder


def run_in_holder(args, locked: MemoryLockedError) -> int:
    """Run the command in the process that holds the memory open, if it serves commands; else re-raise."""
    from ..host import find_host, send, serving_a_client

    memory = memory_argument(args)
    if serving_a_client() or args.command not in HOSTABLE or not memory:
        raise locked
    address = find_host(Path(memory))
    if address is None:
        raise locked
    print(f"vmem: {memory} is open in the vmem app (pid {address.pid}); running the command there", file=sys.stderr)
    reply = send(address, client_request(args))
    sys.stdout.write(reply["stdout"])
    sys.stderr.write(reply["stderr"])
    return int(reply["status"])

