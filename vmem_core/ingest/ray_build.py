"""`vmem build --engine ray`: the same build, with reading and encoding spread over a Ray cluster through Ray Data.

The collection is cut into the same chunks as the single-process build (BUILD_CHUNK images, in scan order); Ray Data
reads each chunk's files (tasks), then decodes, thumbnails and encodes it on an actor pool that loads the memory's
encoder once per actor (`map_batches`). The driver writes the chunks into the memory in order, so ids, labels,
sources and vectors come out exactly as a single-process build gives them, and an interrupted build resumes the
same way (sources already in the memory are skipped).

Local: a Ray instance is started on this machine (`num_cpus` workers) and its workers see the driver's sys.path.
Cluster: `address` ("ray://head:10001" or "auto"); vmem and the encoder's weights must be installed on the workers.
Encoders registered at run time (`register_encoder`, e.g. a plug-in or the tests' pixel encoder) travel to the
workers with their factory, pickled by Ray.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import numpy as np
import ray

from ..encoders import _FACTORIES, load_encoder, register_encoder
from ..errors import BadImageError, VmemError
from .datasets import LabelledImage
from .images import load_image, make_thumbnail

if TYPE_CHECKING:
    from .pipeline import BuildReport, BuildTarget

log = logging.getLogger(__name__)


@dataclass
class EncodedChunk:
    """One chunk's result, in input order: the good images' embeddings and metadata, the rejected ones' reasons."""

    index: int
    labels: list[str]
    sources: list[str]
    sha256: list[str]
    thumbnails: list[bytes]
    embeddings: np.ndarray
    rejected: list[tuple[str, str]]  # (path, reason)


def read_chunk(row: dict) -> dict:
    """Ray Data stage 1 (tasks): the chunk's file bytes (a file that cannot be read is rejected later, by name)."""
    data = []
    for path in row["paths"]:
        try:
            data.append(Path(path).read_bytes())
        except OSError as exc:
            data.append(f"cannot read {path}: {exc.strerror or exc}")
    return {**row, "data": pickle.dumps(data)}


class ChunkEncoder:
    """Ray Data stage 2 (actor pool): decode, thumbnail and encode a chunk with the memory's encoder."""

    def __init__(self, name: str, identity: str, factory: Optional[Callable]) -> None:
        prefix = name.partition(":")[0]
        if factory is not None and prefix not in _FACTORIES:
            register_encoder(prefix, factory)  # an encoder registered at run time in the driver
        self.encoder = load_encoder(name)
        if self.encoder.identity != identity:
            raise VmemError(f"encoder {name!r} on a Ray worker has identity {self.encoder.identity}, the memory "
                            f"{identity}: install the same weights on every worker")

    def __call__(self, batch: dict) -> dict:
        out = []
        for index, paths, labels, sources, data in zip(batch["index"], batch["paths"], batch["labels"],
                                                       batch["sources"], batch["data"]):
            out.append(pickle.dumps(self._encode(int(index), list(paths), list(labels), list(sources),
                                                 pickle.loads(data))))
        return {"index": np.asarray(batch["index"]), "result": np.asarray(out, dtype=object)}

    def _encode(self, index: int, paths, labels, sources, data) -> EncodedChunk:
        good, rejected = [], []
        for path, label, source, raw in zip(paths, labels, sources, data):
            if isinstance(raw, str):
                rejected.append((path, raw))
                continue
            try:
                good.append((label, source, load_image(raw, source)))
            except BadImageError as exc:
                rejected.append((path, str(exc)))
        images = [loaded.image for _, _, loaded in good]
        embeddings = self.encoder.encode(images) if images else np.zeros((0, self.encoder.dim), np.float32)
        return EncodedChunk(index, [g[0] for g in good], [g[1] for g in good], [g[2].sha256 for g in good],
                            [make_thumbnail(image) for image in images], np.asarray(embeddings, np.float32),
                            rejected)


def start(address: Optional[str] = None, num_cpus: Optional[int] = None) -> bool:
    """Connect to the Ray cluster at `address`, or start a local instance; False if Ray was already running."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # local workers import what the driver imports (vmem from a checkout, run-time registered encoders)
        path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    return True


def build_with_ray(
    memory: "BuildTarget",
    data: Union[str, Path, Sequence[LabelledImage]],
    address: Optional[str] = None,
    num_cpus: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    strict: bool = False,
    actors: Optional[int] = None,
) -> "BuildReport":
    """Build (or resume building) `memory` from a labelled collection with Ray Data; see the module docstring.

    Args:
        address: a Ray cluster ("ray://head:10001", "auto"); None starts a local instance with `num_cpus`.
        actors: encoder actors (default: one per CPU of the local instance, 2 on a cluster).
        strict: stop at the first unreadable image (as `VisualMemory.build`).
    """
    from .pipeline import BUILD_CHUNK

    total, todo, report = memory.exemplars.plan_build(data)
    done = report.skipped_existing
    if progress:
        progress(done, total)
    if not todo:
        return report
    encoder_name = memory.config["encoder"]["name"]
    prefix = encoder_name.partition(":")[0]
    factory = _FACTORIES.get(prefix)
    builtin = getattr(factory, "__module__", "").startswith("vmem_core.")
    chunks = [todo[i:i + BUILD_CHUNK] for i in range(0, len(todo), BUILD_CHUNK)]
    started = start(address, num_cpus)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # chunks reach the driver in order: ids as a local build
        rows = [{"index": i, "paths": [str(item.path) for item in chunk], "labels": [item.label for item in chunk],
                 "sources": [item.source for item in chunk]} for i, chunk in enumerate(chunks)]
        pool = actors or (int(ray.cluster_resources().get("CPU", 2)) if not address else 2)
        dataset = (
            ray.data.from_items(rows, override_num_blocks=len(rows))
            .map(read_chunk)
            .map_batches(ChunkEncoder, batch_size=1, concurrency=max(1, min(pool, len(rows))),
                         fn_constructor_args=(encoder_name, memory.config["encoder"]["identity"],
                                              None if builtin else factory))
        )
        expected = 0
        for batch in dataset.iter_batches(batch_size=1, batch_format="numpy"):
            for index, payload in zip(batch["index"], batch["result"]):
                chunk = pickle.loads(payload)
                if int(index) != expected:
                    raise VmemError(f"Ray returned chunk {index} where chunk {expected} was due")
                expected += 1
                if chunk.rejected and strict:
                    raise BadImageError(chunk.rejected[0][1])
                report.rejected += chunk.rejected
                if chunk.labels:
                    memory.exemplars.add_embeddings(chunk.embeddings, chunk.labels, chunk.sources, chunk.sha256,
                                          chunk.thumbnails)
                    report.added += len(chunk.labels)
                done += len(chunks[chunk.index])
                if progress:
                    progress(done, total)
    finally:
        if started:
            ray.shutdown()
    memory.index.flush()
    return report
