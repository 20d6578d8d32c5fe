"""Reading untrusted images: size limits, decompression bombs, truncated or fake files, thumbnails.

Every failure is a BadImageError whose message names the file and what is accepted, raised before anything is
written, so a rejected image never half-enters a memory.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadImageError

ImageInput = Union[str, Path, bytes, Image.Image]

MAX_IMAGE_BYTES = 50 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
# The app's upload limit per file (`vmem app` passes it; .streamlit/config.toml says the same for `streamlit run`):
# above one image's limit because the Evaluate page takes a .zip of labelled images.
MAX_UPLOAD_MEGABYTES = 200
THUMBNAIL_SIZE = 96
# A JPEG whose sides are both at least twice this is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, PIL's
# draft mode), never below this on either side: every encoder resizes to at most 336 px and the thumbnail to 96, so
# they lose nothing, and a 12-megapixel photo decodes several times faster. The sha256 stays that of the file's bytes.
JPEG_DRAFT_MIN_SIDE = 448
ACCEPTED = "PNG, JPEG, GIF, BMP, TIFF or WebP"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image with the identity of the bytes it came from."""

    image: Image.Image
    sha256: str
    source: str


def read_image_bytes(item: ImageInput, name: str) -> bytes:
    """The bytes of a path (or bytes), refused as load_image refuses them: missing, not a file, empty, too big."""
    if isinstance(item, bytes):
        data = item
    else:
        path = Path(item)
        if not path.exists():
            raise BadImageError(f"{name}: no such file")
        if not path.is_file():
            raise BadImageError(f"{name}: not a file; expected an image file ({ACCEPTED})")
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise BadImageError(f"{name}: {size:,} bytes, above the limit of {MAX_IMAGE_BYTES:,} bytes")
        data = path.read_bytes()
    if not data:
        raise BadImageError(f"{name}: empty file; expected an image ({ACCEPTED})")
    if len(data) > MAX_IMAGE_BYTES:
        raise BadImageError(f"{name}: {len(data):,} bytes, above the limit of {MAX_IMAGE_BYTES:,} bytes")
    return data


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # convert("RGB") clips 16-bit and float images to white; rescale to 8 bits first.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _check_size(label: str, width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise BadImageError(f"{label}: {width}x{height} pixels: an image needs at least one")
    if width * height > MAX_IMAGE_PIXELS:
        raise BadImageError(f"{label}: {width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS:,} pixels")


def check_image_header(data: bytes, name: str) -> Optional[Image.Image]:
    """The lazily opened image (header read, no pixel decoded) within the size limits, or None where PIL cannot
    tell from the header what it is (load_image then says why).

    Raises:
        BadImageError: the header's size is above the limits (as load_image says it).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - whatever it is, load_image decodes it again and names the problem
        return None
    _check_size(name, *opened.size)
    return opened


def load_image(item: ImageInput, name: str | None = None) -> LoadedImage:
    """Decode `item` (a path, raw bytes or a PIL image) into RGB, enforcing the size limits.

    Raises:
        BadImageError: missing, empty, undecodable, truncated, too many bytes or too many pixels.
    """
    if isinstance(item, Image.Image):
        label = name or "<image>"
        _check_size(label, *item.size)
        rgb = _to_rgb(item)
        return LoadedImage(rgb, hashlib.sha256(rgb.tobytes()).hexdigest(), label)
    label = name or (str(item) if not isinstance(item, bytes) else "<bytes>")
    data = read_image_bytes(item, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # damaged-tag notes: the image is decoded or rejected anyway
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            _check_size(label, *opened.size)  # from the header: before any pixel is decoded
            if opened.format == "JPEG" and min(opened.size) >= 2 * JPEG_DRAFT_MIN_SIDE:
                opened.draft(None, (JPEG_DRAFT_MIN_SIDE, JPEG_DRAFT_MIN_SIDE))
            opened.load()
            oriented = ImageOps.exif_transpose(opened)
            rgb = _to_rgb(oriented)
    except BadImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(
            f"{label}: rejected as a decompression bomb: more than {MAX_IMAGE_PIXELS:,} pixels ({exc})"
        ) from None
    except UnidentifiedImageError:
        raise BadImageError(f"{label}: not a recognised image; accepted: {ACCEPTED}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImageError(f"{label}: damaged or truncated image ({exc})") from None
    if rgb.width < 1 or rgb.height < 1:
        raise BadImageError(f"{label}: image has no pixels")
    return LoadedImage(rgb, hashlib.sha256(data).hexdigest(), label)


def make_thumbnail(image: Image.Image, size: int = THUMBNAIL_SIZE) -> bytes:
    """PNG bytes of `image` shrunk to fit size x size (never enlarged), for galleries that lack the originals."""
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
