"""Recreate the sample data in data/ from the full Fashion-MNIST IDX files and scikit-image's photos.

Usage:
    python data/make_sample.py [--idx-dir /usr/share/datasets/fashion-mnist] [--per-class 100] [--queries 20]

The IDX files come from Debian's `dataset-fashion-mnist` package (MIT, Zalando SE). Memory images are the first
`--per-class` training images of each class; queries the first `--queries` test images of each class, so the two
splits never share an image. Out-of-distribution photos are scikit-image's bundled samples.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

OOD_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera"]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from vmem_core.embedding_cache import FASHION_MNIST_CLASSES, read_idx  # noqa: E402

# Directory names double as label names in the memory, so they avoid spaces and slashes.
CLASS_NAMES = list(FASHION_MNIST_CLASSES)


def write_split(images: np.ndarray, labels: np.ndarray, per_class: int, out: Path) -> int:
    if out.exists():
        shutil.rmtree(out)
    written = 0
    for class_id, name in enumerate(CLASS_NAMES):
        chosen = np.flatnonzero(labels == class_id)[:per_class]
        (out / name).mkdir(parents=True)
        for index in chosen:
            Image.fromarray(images[index], mode="L").save(out / name / f"{index:05d}.png", optimize=True)
            written += 1
    return written


def write_ood_photos(out: Path) -> int:
    from skimage import data as skdata

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in OOD_PHOTOS:
        photo = Image.fromarray(getattr(skdata, name)())
        photo.thumbnail((256, 256))
        photo.save(out / f"{name}.jpg", quality=90)
    return len(OOD_PHOTOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idx-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE / "fashion-mnist")
    args = parser.parse_args()

    train_x = read_idx(args.idx_dir / "train-images-idx3-ubyte.gz")
    train_y = read_idx(args.idx_dir / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(args.idx_dir / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(args.idx_dir / "t10k-labels-idx1-ubyte.gz")
    n_memory = write_split(train_x, train_y, args.per_class, args.out / "memory")
    n_queries = write_split(test_x, test_y, args.queries, args.out / "queries")
    n_ood = write_ood_photos(HERE / "ood")
    print(f"wrote {n_memory} memory images, {n_queries} queries, {n_ood} out-of-distribution photos")


if __name__ == "__main__":
    main()
