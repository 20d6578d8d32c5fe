"""What a memory holds and what it costs: exemplar counts, bytes on disk by part, and RAM, for `vmem stats`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from ..storage.layout import CERTIFICATE_DIR, CONFIG_NAME, DATABASE_NAME, THUMBNAILS_NAME, VECTORS_NAME

if TYPE_CHECKING:
    from ..backends.base import IndexBackend
    from ..backends.hnsw_index import IndexParams
    from ..label_table import LabelTable
    from ..storage.store import Store

DISK_PARTS = ("vectors", "thumbnails", "database", "index", "other")


def disk_usage(path: Path) -> dict[str, int]:
    """Bytes of every file under the memory folder, by part (anything not named in the layout is the index's)."""
    parts = dict.fromkeys(DISK_PARTS, 0)
    for file in (p for p in Path(path).rglob("*") if p.is_file()):
        top = file.relative_to(path).parts[0]
        part = ("vectors" if top == VECTORS_NAME else "thumbnails" if top == THUMBNAILS_NAME
                else "database" if top.startswith(DATABASE_NAME)
                else "other" if top in (CONFIG_NAME, CERTIFICATE_DIR) or file.parent == Path(path)
                else "index")  # the index's own folder
        parts[part] += file.stat().st_size
    return parts


def memory_stats(path: Path, config: dict, index_params: "IndexParams", store: "Store", index: "IndexBackend",
                 table: "LabelTable") -> dict:
    """The `vmem stats --json` record. The caller holds the memory's read lock."""
    counts = store.counts()
    parts = disk_usage(path)
    total_bytes = sum(parts.values())
    rows = counts["live"] + counts["deleted"]

    def per_row(size):  # None (JSON null) when there is no exemplar: the fixed overhead is no per-exemplar cost
        return round(size / rows, 1) if rows else None

    # what an open memory keeps in RAM: the hnswlib graph with its vectors, and the label table (vault vectors
    # and thumbnails are read from disk on demand; DuckDB's cache is bounded by its own settings)
    ram = index.resident_bytes() + table.ids.nbytes + table.classes.nbytes
    return {
        "path": str(path),
        "format_version": config["version"],
        "encoder": config["encoder"]["name"],
        "encoder_identity": config["encoder"]["identity"],
        "dim": int(config["encoder"]["dim"]),
        "exemplars": counts["live"],
        "deleted": counts["deleted"],
        "classes": len(table.labels),
        "labels": store.label_counts(),
        "bytes": total_bytes,
        "bytes_per_exemplar": per_row(total_bytes),
        "bytes_per_exemplar_by_part": {part: per_row(size) for part, size in parts.items()},
        "ram_bytes": int(ram),
        "ram_bytes_per_exemplar": per_row(ram),
        "index": asdict(index_params),
        "index_backend": index.describe(),
    }
