"""Shared fixtures. Most tests use a tiny pixel encoder (fast, no torch); the real encoder has its own tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vmem_core import VisualMemory

from .helpers import REPO, TIMEOUT, TINY_CLIP, new_memory, sample_folder  # importing helpers registers the test encoders


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """An ImageFolder of 3 labels x 4 images, from the shipped Fashion-MNIST sample."""
    return sample_folder(tmp_path / "small", ("bag", "sneaker", "trouser"), per_label=4)


@pytest.fixture
def memory(tmp_path: Path, small_folder: Path):
    mem = new_memory(tmp_path / "mem")
    mem.exemplars.build(small_folder)
    yield mem
    try:
        mem.close()
    except Exception:
        pass


@pytest.fixture
def app(tmp_path, small_folder, monkeypatch):
    path = tmp_path / "app.vmem"
    with new_memory(path) as memory:
        memory.exemplars.build(small_folder)
    monkeypatch.setenv("VMEM_MEMORY", str(path))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def clip_memory(tmp_path_factory):
    import open_clip
    import torch

    root = tmp_path_factory.mktemp("clip")
    config = root / "vmem-tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    checkpoint = root / "tiny.pt"
    torch.save(open_clip.create_model("vmem-tiny-clip").state_dict(), checkpoint)
    data = sample_folder(root / "data", ("bag", "sneaker", "trouser"), per_label=4)
    with VisualMemory.create(root / "mem", encoder=f"open_clip:vmem-tiny-clip:{checkpoint}") as memory:
        memory.exemplars.build(data)
    return root / "mem"


@pytest.fixture
def launched_apps(monkeypatch) -> list:
    """`vmem app`'s server, replaced by one that exits at once: each start's (command, env) is recorded."""
    from vmem_core.cli import app as cli_app

    started = []

    class ExitsAtOnce:
        def __init__(self, command, env, stdin, preexec_fn=None):
            started.append((command, env))

        def poll(self):
            return 0

        wait = poll

    monkeypatch.setattr(cli_app.subprocess, "Popen", ExitsAtOnce)
    return started


@pytest.fixture
def device_reset():
    """For tests that set the process's device (set_default_device, or main([..., "--device", D])): unset after."""
    from vmem_core.devices import set_default_device

    yield
    set_default_device(None)
