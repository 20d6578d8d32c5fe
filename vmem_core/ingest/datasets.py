"""Labelled image collections on disk: an ImageFolder directory (DIR/<label>/<image>) or a CSV of path,label."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError
from .images import is_image_path
from .names import BadLabelError, check_label


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
    try:
        return _scan_csv(csv_path)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{csv_path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}: not a readable CSV ({exc})") from None


def _scan_csv(csv_path: Path) -> list[LabelledImage]:
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


def check_dataset_labels(items: list[LabelledImage]) -> None:
    """Refuse a bad folder name or CSV label, naming the first image that carries it, before anything is built."""
    first_source: dict[str, str] = {}
    for item in items:
        first_source.setdefault(item.label, item.source)
    for label, source in first_source.items():
        try:
            check_label(label)
        except BadLabelError as exc:
            raise BadLabelError(f"{source!r}: {exc}; nothing was added") from None


MAX_ZIP_MEMBERS = 50_000
MAX_ZIP_BYTES = 1024**3
# uncompressed bytes per byte of archive: images are compressed already (PNG, JPEG pack ~1:1 again), so an archive
# that claims to unpack far larger is a zip bomb (a 1.84 MB zip unpacked to 1.9 GB on disk)
MAX_ZIP_RATIO = 20


def extract_labelled_zip(data: bytes, destination: Path) -> Path:
    """Safely unpack a .zip holding `<label>/<image>` folders (optionally under one top folder).

    Refuses absolute paths and `..` (zip slip), more than MAX_ZIP_MEMBERS files, more than MAX_ZIP_BYTES
    uncompressed or more than MAX_ZIP_RATIO times its own size (a zip bomb), and a damaged member (bad CRC). Returns the folder to scan as an ImageFolder.
    """
    import io
    import zipfile
    import zlib

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DatasetError("not a zip file; expected a .zip of <label>/<image> folders") from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise DatasetError(f"zip holds {len(members):,} files; the limit is {MAX_ZIP_MEMBERS:,}")
    unpacked = sum(m.file_size for m in members)
    if unpacked > MAX_ZIP_BYTES:
        raise DatasetError(f"zip unpacks to {unpacked:,} bytes; the limit is {MAX_ZIP_BYTES:,}")
    if unpacked > MAX_ZIP_RATIO * max(len(data), 1) and unpacked > 1024**2:
        raise DatasetError(f"zip of {len(data):,} bytes unpacks to {unpacked:,} (more than {MAX_ZIP_RATIO}x): "
                           "refused as a zip bomb; zip the images themselves (they are compressed already)")
    destination = Path(destination).resolve()
    for member in members:
        target = (destination / member.filename).resolve()
        if destination not in target.parents:
            raise DatasetError(f"zip member {member.filename!r} would land outside the target folder")
    for member in members:
        try:  # zipfile stops each member at its declared size and checks its CRC at the end
            archive.extract(member, destination)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
            raise DatasetError(f"zip member {member.filename!r} is damaged ({exc}); make the zip again") from None
    entries = [p for p in destination.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and all(c.is_dir() for c in entries[0].iterdir()):
        return entries[0]  # a single top folder holding the label folders
    return destination
