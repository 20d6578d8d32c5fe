"""Synthetic unit vectors whose neighbour structure follows real embeddings: shared by the search and classify benches.

The guide is the default encoder (efficientnet-lite0) on Fashion-MNIST training images, encoded once and cached in
$VMEM_CACHE_DIR (or ~/.cache/vmem). From them we take:

* the mean vector and the principal-component spectrum (the embeddings are non-negative ReLU6 averages: a large
  shared mean, and variance concentrated in few directions: a low intrinsic dimension);
* the neighbour-distance profile: for each point, the cosine distance to its 1st, 10th and 50th nearest other point
  (medians and 10/90% quantiles).

The generator draws a two-level Gaussian mixture in that principal basis: cluster centres with a share `between` of
the per-component variance, members around them with the rest, plus isotropic noise carrying the variance of the
components beyond the top `rank`; then L2-normalises. The cluster size and `between` are fitted so that the synthetic
neighbour-distance profile at the guide's own size matches the real one (the fit and both profiles are printed).
For d = 512 the guide is a fixed random orthogonal projection of the 1280-d embeddings to 512 dimensions (distances
are roughly preserved; no 512-d encoder ships here).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
GUIDE_IMAGES = 2000
RANK = 256
PROFILE_RANKS = (1, 10, 50)


def cache_dir() -> Path:
    return Path(os.environ.get("VMEM_CACHE_DIR") or Path.home() / ".cache" / "vmem")


def fashion_images(count: int) -> np.ndarray:
    with gzip.open(FASHION, "rb") as f:
        data = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
    return data.reshape(-1, 28, 28)[:count]


def guide_embeddings(count: int = GUIDE_IMAGES) -> np.ndarray:
    """Default-encoder embeddings of the first `count` Fashion-MNIST training images (cached after the first run)."""
    path = cache_dir() / f"fashion-mnist-train{count}-efficientnet-lite0.npy"
    if path.exists():
        return np.load(path)
    import sys

    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from vmem_core import load_encoder

    encoder = load_encoder("efficientnet-lite0")
    images = [Image.fromarray(a).convert("RGB") for a in fashion_images(count)]
    embeddings = encoder.encode(images, batch_size=32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, embeddings)
    return embeddings


def project(embeddings: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """A fixed random orthogonal projection to `dim` dimensions, re-normalised (identity when dim is the same)."""
    if dim == embeddings.shape[1]:
        return embeddings
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(embeddings.shape[1], dim)))
    out = embeddings @ basis.astype(np.float32)
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def neighbor_profile(vectors: np.ndarray, ranks=PROFILE_RANKS) -> dict[int, tuple[float, float, float]]:
    """Cosine distance from each point to its r-th nearest other point: (10%, median, 90%) for each r."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = -np.sort(-sims, axis=1)[:, : max(ranks)]
    out = {}
    for r in ranks:
        d = 1.0 - top[:, r - 1]
        out[r] = tuple(float(x) for x in np.quantile(d, [0.1, 0.5, 0.9]))
    return out


@dataclass
class EmbeddingModel:
    mean: np.ndarray  # (d,)
    components: np.ndarray  # (rank, d) principal directions
    scales: np.ndarray  # (rank,) standard deviation along each
    residual: float  # standard deviation of the isotropic rest, per dimension
    cluster_size: int = 50
    between: float = 0.7  # share of each component's variance that lies between cluster centres
    spread: float = 0.0  # clusters differ in tightness: member spread x lognormal(0, spread), mean square kept at 1

    @property
    def dim(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, guide: np.ndarray, rank: int = RANK) -> "EmbeddingModel":
        mean = guide.mean(axis=0)
        centred = guide - mean
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        variances = singular**2 / (len(guide) - 1)
        rank = min(rank, len(variances))
        rest = variances[rank:].sum() / guide.shape[1]
        return cls(mean.astype(np.float32), vt[:rank].astype(np.float32), np.sqrt(variances[:rank]).astype(np.float32),
                   float(np.sqrt(rest)))

    def sample(self, n: int, seed: int, clusters: int | None = None, chunk: int = 100_000, labels: bool = False):
        """n unit vectors (float32) around `clusters` centres (default n // cluster_size); with labels=True also
        each one's cluster index. Queries for a collection of size N: sample(q, other seed, clusters=N // size)."""
        rng = np.random.default_rng(seed)
        clusters = clusters or max(1, n // self.cluster_size)
        # centres come from their own stream, fixed by their count, so that queries share the collection's clusters
        centre_rng = np.random.default_rng(12345 + clusters)
        centres = centre_rng.normal(size=(clusters, len(self.scales))).astype(np.float32) * np.sqrt(self.between)
        tightness = np.exp(self.spread * centre_rng.normal(size=clusters) - self.spread**2).astype(np.float32)
        out = np.empty((n, self.dim), dtype=np.float32)
        assignment = rng.integers(0, clusters, n)
        within = np.sqrt(1.0 - self.between)
        basis = (self.scales[:, None] * self.components).astype(np.float32)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            which = assignment[start:stop]
            z = centres[which] + (within * tightness[which])[:, None] * rng.standard_normal(
                (stop - start, len(self.scales)), dtype=np.float32)
            block = z @ basis + self.mean
            block += self.residual * rng.standard_normal(block.shape, dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start:stop] = block
        return (out, assignment) if labels else out

    def fit_structure(self, guide: np.ndarray, sizes=(20, 50, 100, 200), betweens=(0.3, 0.5, 0.7),
                      spreads=(0.0, 0.3, 0.5, 0.7)):
        """Pick cluster_size, between and spread so that the synthetic neighbour profile (10%, median and 90% of
        the 1st, 10th and 50th neighbour distance) at len(guide) matches the guide's; returns (real profile,
        synthetic profile, squared log error)."""
        real = neighbor_profile(guide)
        best = None
        for size in sizes:
            for between in betweens:
                for spread in spreads:
                    self.cluster_size, self.between, self.spread = size, between, spread
                    synthetic = neighbor_profile(self.sample(len(guide), seed=1))
                    error = sum((np.log(s) - np.log(r)) ** 2 for rank in real
                                for s, r in zip(synthetic[rank], real[rank]))
                    if best is None or error < best[0]:
                        best = (error, size, between, spread, synthetic)
        error, self.cluster_size, self.between, self.spread, synthetic = best
        return real, synthetic, error


def model_for(dim: int) -> tuple[EmbeddingModel, dict, dict]:
    """The fitted model for `dim` and the (real, synthetic) neighbour profiles it was fitted to."""
    guide = project(guide_embeddings(), dim)
    model = EmbeddingModel.fit(guide)
    real, synthetic, _ = model.fit_structure(guide)
    return model, real, synthetic
