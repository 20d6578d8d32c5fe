"""Labelled image collections on disk: an ImageFolder directory (DIR/<label>/<image>) or a CSV of path,label."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError
from .images import is_image_path


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: str
    source: str  # the name recorded in the memory: the path relative to the dataset root


def scan_image_folder(root: Path) -> list[LabelledImage]:
    """Every image under DIR/<label>/ (nested folders included), sorted; hidden files and non-images skipped."""
    root = Path(root)
    items = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(label_dir.rglob("*")):
            if path.is_file() and is_image_path(path) and not any(part.startswith(".") for part in path.parts[-2:]):
                items.append(LabelledImage(path, label_dir.name, path.relative_to(root).as_posix()))
    return items


def scan_csv(csv_path: Path) -> list[LabelledImage]:
    """Rows of a CSV with a header holding `path` and `label`; relative paths are taken from the CSV's folder."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "path" not in columns or "label" not in columns:
            raise DatasetError(
                f"{csv_path}: needs a header with columns 'path' and 'label'; found {reader.fieldnames or 'no header'}"
            )
        items = []
        for line, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if not row.get("path") or not row.get("label"):
                raise DatasetError(f"{csv_path}:{line}: empty path or label")
            path = Path(row["path"]).expanduser()
            if not path.is_absolute():
                path = csv_path.parent / path
            items.append(LabelledImage(path, row["label"], row["path"]))
    return items


def scan_dataset(location: Path) -> list[LabelledImage]:
    """Resolve an ImageFolder directory or a .csv file into labelled images.

    Raises:
        DatasetError: missing location, wrong layout, or no images at all.
    """
    location = Path(location)
    if not location.exists():
        raise DatasetError(f"{location}: no such file or directory; expected an ImageFolder directory or a CSV file")
    if location.is_file():
        if location.suffix.lower() != ".csv":
            raise DatasetError(f"{location}: expected an ImageFolder directory (DIR/<label>/<image>) or a .csv file")
        items = scan_csv(location)
    else:
        items = scan_image_folder(location)
    if not items:
        raise DatasetError(
            f"{location}: no labelled images found; expected DIR/<label>/<image> (png, jpg, ...) or a CSV of path,label"
        )
    return items
