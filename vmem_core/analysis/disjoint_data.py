"""Data disjoint from Fashion-MNIST for the new-class and OOD claims: scikit-learn's digits (1,797 8x8 images of
handwritten digits, 10 classes, nothing like clothing) and scikit-image's sample photos (far OOD).

The paper's new classes (NINCO) are built to share nothing with ImageNet; held-out Fashion-MNIST classes overlap the
old ones (shirts look like t-shirts), so the report shows both and says which is which. Embeddings are cached beside
the IDX ones (keyed by the encoder's identity and the images' SHA-256), so the report's run re-encodes nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..encoders.efficientnet import cache_dir

# scikit-image's sample photos (colour and grey natural images; none shows clothing on its own)
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins", "moon", "page", "horse", "cat",
          "immunohistochemistry", "hubble_deep_field", "retina", "brick", "grass", "gravel", "text", "clock",
          "motorcycle_left", "motorcycle_right", "colorwheel", "logo")


def digits_images() -> tuple[list, np.ndarray]:
    """scikit-learn's digits as 8-bit RGB PIL images (the 0..16 pixel scale stretched to 0..255, white on black as
    Fashion-MNIST is) and their labels as 'digit-N'."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = np.clip(np.asarray(data.images) * (255 / 16), 0, 255).astype(np.uint8)
    images = [Image.fromarray(p, mode="L").resize((28, 28), Image.BILINEAR).convert("RGB") for p in pixels]
    return images, np.asarray([f"digit-{int(t)}" for t in data.target], dtype=object)


def photo_images() -> list:
    """scikit-image's sample photos that load (some need a download; those are skipped), as RGB PIL images."""
    from PIL import Image
    from skimage import data as samples

    images = []
    for name in PHOTOS:
        try:
            array = np.asarray(getattr(samples, name)())
        except Exception:  # a sample that must be fetched from the network: not here, skipped
            continue
        if array.ndim == 3 and array.shape[2] == 4:
            array = array[:, :, :3]
        if array.dtype != np.uint8:
            array = np.clip(array / max(float(array.max()), 1e-9) * 255, 0, 255).astype(np.uint8)
        images.append(Image.fromarray(array).convert("RGB"))
    return images


def _key(images: list) -> str:
    digest = hashlib.sha256()
    for image in images:
        digest.update(image.tobytes())
    return digest.hexdigest()[:16]


def cached_embeddings(encoder, name: str, images: list, progress: Optional[Callable[[int, int], None]] = None,
                      chunk: int = 256) -> np.ndarray:
    """Embeddings of `images` under `encoder`, from the cache when an entry for the same encoder and pixels exists."""
    folder = Path(cache_dir()) / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    identity = hashlib.sha256(encoder.identity.encode()).hexdigest()[:16]
    path = folder / f"{name}-{identity}-{_key(images)}.npy"
    if path.exists():
        return np.load(path)
    parts = []
    for start in range(0, len(images), chunk):
        parts.append(np.asarray(encoder.encode(images[start:start + chunk]), dtype=np.float32))
        if progress:
            progress(min(start + chunk, len(images)), len(images))
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)  # whole or absent: a killed run leaves no half entry
    return vectors
