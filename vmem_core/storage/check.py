"""Checks of a memory folder made before anything in it is opened for writing: what a copied, unpacked or
hand-edited folder can get wrong, each reported as one line naming the file and what to do.

A memory received from someone else (an archive, a shared drive) is untrusted: a symbolic link inside it would make
vmem write through it into the user's own files, so links are refused, and the files vmem writes are also opened
with O_NOFOLLOW (a link made after this check is refused by the kernel).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from ..errors import MemoryFormatError
from .layout import CERTIFICATE_DIR, CONFIG_NAME, ENTRIES, HNSW_DIR, HNSW_MANIFEST_NAME, MILVUS_LITE_DIR, RERANK_CACHE_DIR

# folders whose files vmem writes: a link inside them is as dangerous as one at the top
_FOLDERS = (HNSW_DIR, CERTIFICATE_DIR, RERANK_CACHE_DIR)


def refuse_links(folder: Path) -> None:
    """Raise MemoryFormatError for the first symbolic link among the memory's entries (the folder itself may be one:
    that is where the user keeps it)."""
    folder = Path(folder)
    candidates = [folder / name for name in ENTRIES]
    for name in _FOLDERS + (MILVUS_LITE_DIR,):
        sub = folder / name
        if sub.is_dir() and not sub.is_symlink():
            candidates.extend(sorted(sub.iterdir()))
    for path in candidates:
        if path.is_symlink():
            raise MemoryFormatError(
                f"{path} is a symbolic link (to {os.readlink(path)}); vmem does not follow links inside a memory, "
                "since writing through one would change a file outside it: replace the link with a copy of the file "
                f"(cp --remove-destination \"$(readlink -f {path})\" {path}) or remove it")


def index_manifest_dim(folder: Path) -> Optional[int]:
    """The dimension the hnswlib index manifest records (written from the vectors themselves), if there is one."""
    try:
        value = json.loads((Path(folder) / HNSW_DIR / HNSW_MANIFEST_NAME).read_text()).get("dim")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def check_dimension(folder: Path, config_dim: int, recorded_dim: Optional[int]) -> None:
    """vmem.json's encoder.dim must be the dimension the vectors were stored with: a hand-edited value would make
    every record boundary wrong (and a write would cut the vector file to fit it)."""
    evidence = [(recorded_dim, "the database"), (index_manifest_dim(folder), "the index manifest")]
    for dim, where in evidence:
        if dim is not None and int(dim) != int(config_dim):
            raise MemoryFormatError(
                f"{Path(folder) / CONFIG_NAME}: encoder.dim says {config_dim}, but {where} records {dim}-d vectors; "
                f"vmem.json was edited or belongs to another memory: set encoder.dim back to {dim}")
