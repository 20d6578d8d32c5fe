"""A memory folder's layout: every file and folder vmem writes inside it, named here and nowhere else.

    vmem.json            format version, encoder name, identity and dimension, index parameters and backend
    memory.duckdb(.wal)  exemplar rows and the audit log: the source of truth (vmem_core.storage.store)
    vectors.f32          the embeddings, float32 rows (vmem_core.storage.vault)
    thumbs.bin           the thumbnails, appended PNGs (vmem_core.storage.vault)
    index/               hnswlib snapshots and their manifest.json (vmem_core.backends.hnsw_index), or
    milvus/, milvus.json milvus-lite's data and the last change it holds, for embedded Milvus (vmem_core.backends)
    purge.journal.json   a purge in progress, finished on the next open if interrupted (vmem_core.unlearn)
    certificates/        purge certificates (vmem_core.unlearn)
    host.json            where the app holding the memory serves CLI commands (vmem_core.host)
    memory.lock          locked by the process that holds the memory, never replaced (vmem_core.storage.owner_lock)
    rerank-cache/        answers of vision-language re-rankers (vmem_core.rerank.cache)
    neighbours/          the leave-one-out neighbour table and a full build's checkpoint (vmem_core.storage.neighbour_table)
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MemoryFormatError

FORMAT_NAME = "vmem-memory"
FORMAT_VERSION = 2  # 2: embeddings and thumbnails in the vault files (1: inside DuckDB; migrated on open)

CONFIG_NAME = "vmem.json"
DATABASE_NAME = "memory.duckdb"
VECTORS_NAME = "vectors.f32"
THUMBNAILS_NAME = "thumbs.bin"
HNSW_DIR = "index"
HNSW_MANIFEST_NAME = "manifest.json"
MILVUS_LITE_DIR = "milvus"
MILVUS_STATE = "milvus.json"
PURGE_JOURNAL = "purge.journal.json"
CERTIFICATE_DIR = "certificates"
HOST_FILE = "host.json"
LOCK_FILE = "memory.lock"
RERANK_CACHE_DIR = "rerank-cache"
NEIGHBOUR_DIR = "neighbours"
NEIGHBOUR_TABLE = "neighbours/table.npz"

# the top-level entries a memory folder may hold (DuckDB adds its write-ahead log beside the database)
ENTRIES = (CONFIG_NAME, DATABASE_NAME, DATABASE_NAME + ".wal", VECTORS_NAME, THUMBNAILS_NAME, HNSW_DIR,
           MILVUS_LITE_DIR, MILVUS_STATE, PURGE_JOURNAL, CERTIFICATE_DIR, HOST_FILE, LOCK_FILE, RERANK_CACHE_DIR,
           NEIGHBOUR_DIR)


def is_memory(path: Path) -> bool:
    """Whether `path` holds a memory (its config file exists; its contents are checked by `read_config`)."""
    return (Path(path) / CONFIG_NAME).is_file()


def read_config(path: Path) -> dict:
    """The memory's vmem.json, checked: a vmem memory, of a format this vmem reads, with a complete encoder record.

    Raises:
        MemoryFormatError: naming what is missing or wrong.
    """
    path = Path(path)
    config_path = path / CONFIG_NAME
    if not path.is_dir():
        raise MemoryFormatError(f"{path}: no such memory directory; create one with `vmem build DATA --memory {path}`")
    if not config_path.exists():
        raise MemoryFormatError(f"{path}: not a vmem memory (no {CONFIG_NAME})")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise MemoryFormatError(f"{config_path}: unreadable ({exc})") from None
    if not isinstance(config, dict):
        raise MemoryFormatError(f"{config_path}: not a vmem memory (expected a JSON object)")
    if config.get("format") != FORMAT_NAME:
        raise MemoryFormatError(f"{config_path}: not a vmem memory (format {config.get('format')!r})")
    if not isinstance(config.get("version"), int) or config["version"] > FORMAT_VERSION:
        raise MemoryFormatError(
            f"{path}: memory format version {config.get('version')!r}; this vmem reads versions up to {FORMAT_VERSION}"
        )
    encoder = config.get("encoder")
    if not isinstance(encoder, dict) or not all(key in encoder for key in ("name", "identity", "dim")):
        raise MemoryFormatError(f"{config_path}: the encoder record (name, identity, dim) is missing or incomplete")
    return config
