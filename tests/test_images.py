"""Hostile and odd image inputs: each a one-line BadImageError naming the file, raised before any write."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vmem_core.errors import BadImageError
from vmem_core.ingest.images import MAX_IMAGE_PIXELS, load_image, make_thumbnail

from .helpers import png_bytes, png_header_only


def test_decompression_bomb_rejected_from_header(tmp_path: Path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(30000, 30000))
    with pytest.raises(BadImageError, match=r"bomb.png: .*(30000x30000|decompression bomb)") as info:
        load_image(bomb)
    assert f"{MAX_IMAGE_PIXELS:,}" in str(info.value)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.png", b"", "empty file"),
        ("random.jpg", np.random.default_rng(0).bytes(4096), "not a recognised image"),
        ("notes.png", b"hello, I am text", "not a recognised image"),
    ],
)
def test_bad_files(tmp_path: Path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadImageError, match=message) as info:
        load_image(path)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_truncated_image(tmp_path: Path):
    data = png_bytes(np.random.default_rng(1).integers(0, 255, (64, 64, 3)))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="cut.png: damaged or truncated"):
        load_image(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(BadImageError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_directory_is_not_an_image(tmp_path: Path):
    with pytest.raises(BadImageError, match="not a file"):
        load_image(tmp_path)


def test_modes_become_rgb():
    grey16 = Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16))
    assert grey16.mode.startswith("I")
    rgb = load_image(grey16).image
    assert rgb.mode == "RGB" and np.asarray(rgb).max() == 255 and np.asarray(rgb).min() == 0
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red composites onto white
    assert load_image(rgba).image.getpixel((0, 0)) == (255, 255, 255)


def test_sha256_is_of_the_file_bytes(tmp_path: Path):
    import hashlib

    data = png_bytes(np.zeros((5, 5)))
    (tmp_path / "a.png").write_bytes(data)
    assert load_image(tmp_path / "a.png").sha256 == hashlib.sha256(data).hexdigest()


def test_in_memory_image_over_the_pixel_limit():
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1
    big = Image.new("1", (side, side))
    with pytest.raises(BadImageError, match="above the limit"):
        load_image(big)


def test_thumbnail_shrinks_but_never_enlarges():
    big = Image.new("RGB", (400, 200))
    small = Image.new("RGB", (28, 28))
    import io

    assert Image.open(io.BytesIO(make_thumbnail(big))).size == (96, 48)
    assert Image.open(io.BytesIO(make_thumbnail(small))).size == (28, 28)


# --- fuzzing: whatever the bytes, the answer is an RGB image or a BadImageError, never another exception ---------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _seed_files() -> dict[str, bytes]:
    import io

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 255, (12, 9, 3), dtype=np.uint8)
    out = {}
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        out[fmt] = buffer.getvalue()
    return out


SEEDS = _seed_files()


def _decodes_or_rejects(data: bytes) -> None:
    try:
        loaded = load_image(data, "fuzzed")
    except BadImageError as exc:
        assert "fuzzed" in str(exc)
        return
    assert loaded.image.mode == "RGB" and loaded.image.width * loaded.image.height <= MAX_IMAGE_PIXELS


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes(data):
    _decodes_or_rejects(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SEEDS)), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=8),
       st.integers(0, 3))
def test_fuzz_mutated_headers(fmt, flips, cut):
    data = bytearray(SEEDS[fmt])
    for position, value in flips:
        data[min(position, len(data) - 1)] = value  # headers live in the first 200 bytes
    if cut:
        data = data[: len(data) * (4 - cut) // 4]
    _decodes_or_rejects(bytes(data))


def test_special_images():
    import io

    frames = [Image.new("P", (5, 4), i) for i in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(gif.getvalue()).image.size == (5, 4)  # animated: the first frame
    cmyk = io.BytesIO()
    Image.new("CMYK", (4, 4), (0, 255, 0, 0)).save(cmyk, format="JPEG")
    assert load_image(cmyk.getvalue()).image.mode == "RGB"
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    Image.new("RGB", (8, 2)).save(rotated, format="JPEG", exif=exif)
    assert load_image(rotated.getvalue()).image.size == (2, 8)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_never_below_what_encoders_need(tmp_path):
    """Draft mode: a 2000 x 1200 JPEG comes back at 1/2 scale (1000 x 600, both sides >= JPEG_DRAFT_MIN_SIDE), close
    to the full decode shrunk the same way; its sha256 is still that of the file."""
    import hashlib
    import io

    import numpy as np
    from PIL import Image

    from vmem_core.ingest.images import JPEG_DRAFT_MIN_SIDE, load_image

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, size=(12, 20, 3)), np.ones((100, 100, 1))).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(smooth).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    loaded = load_image(data)
    assert loaded.image.size == (1000, 600) and min(loaded.image.size) >= JPEG_DRAFT_MIN_SIDE
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    full = Image.open(io.BytesIO(data)).convert("RGB").resize((1000, 600), Image.BILINEAR)
    assert np.abs(np.asarray(loaded.image, np.float32) - np.asarray(full, np.float32)).mean() < 3
    small = io.BytesIO()
    Image.fromarray(smooth[:800, :800]).save(small, format="JPEG")
    assert load_image(small.getvalue()).image.size == (800, 800)  # under twice the minimum: decoded in full


def test_enlarged_thumbnails_are_png_scaled_pixel_sharp_and_kept():
    import io

    from vmem_core.ui.widgets import enlarge

    small = Image.new("L", (2, 1))
    small.putpixel((1, 0), 255)
    png = io.BytesIO()
    small.save(png, format="PNG")
    big = enlarge(png.getvalue(), 8)
    image = Image.open(io.BytesIO(big))
    assert image.format == "PNG" and image.size == (8, 4)
    assert image.convert("L").getpixel((3, 2)) == 0 and image.convert("L").getpixel((4, 2)) == 255  # no blur
    assert enlarge(png.getvalue(), 8) is big  # the next rerun takes it as it is
    grey = Image.open(io.BytesIO(enlarge(None, 5)))
    assert grey.size == (5, 5) and grey.convert("RGB").getpixel((2, 2)) == (230, 230, 230)
