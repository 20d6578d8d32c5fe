"""Where vmem encodes and searches is said where a user looks: the app's sidebar, `vmem build`'s hint on a GPU, and
a command forwarded to the app (which runs it on the app's device, not the one the client asked for)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vmem_core import devices
from vmem_core.cli import main
from vmem_core.devices import Device, devices_text

from .helpers import held_by_a_host, new_memory, png_bytes, vmem


def test_the_sidebar_says_where_the_memory_encodes_and_searches(app):
    assert "encodes on cpu, searches on cpu" in app.sidebar.markdown[0].value


def test_devices_in_words_name_the_gpu():
    where = {"encode": {"device": "cuda:0", "name": "NVIDIA H200"}, "search": {"device": "cpu", "name": "cpu"}}
    assert devices_text(where) == "encodes on cuda:0 (NVIDIA H200), searches on cpu"


@pytest.fixture
def fake_gpu(monkeypatch):
    """This process's device resolves to an 80 GiB GPU (the test encoder and hnswlib never touch it)."""
    monkeypatch.setattr(devices, "resolve_device", lambda spec=None: Device("cuda:0", "Fake GPU"))
    monkeypatch.setattr(devices, "memory_bytes", lambda device: 80 * 2**30)


def test_build_on_a_gpu_with_hnswlib_hints_at_the_exact_backend(tmp_path, small_folder, capsys, fake_gpu):
    memory = tmp_path / "m"
    assert main(["build", str(small_folder), "--memory", str(memory), "--encoder", "test-pixels", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["added"] == 12  # the hint goes to stderr: --json's output is unchanged
    assert "vmem: hint: cuda:0 (Fake GPU) is a GPU and this memory's vectors fit it" in err
    assert "--backend exact" in err and f"vmem migrate {memory} --to exact" in err


def test_no_hint_without_a_gpu_or_when_the_memory_does_not_fit(tmp_path, small_folder, capsys, monkeypatch):
    monkeypatch.setattr(devices, "resolve_device", lambda spec=None: Device("cpu", "cpu"))
    assert main(["build", str(small_folder), "--memory", str(tmp_path / "a"), "--encoder", "test-pixels"]) == 0
    assert "hint" not in capsys.readouterr().err
    monkeypatch.setattr(devices, "resolve_device", lambda spec=None: Device("cuda:0", "Tiny GPU"))
    monkeypatch.setattr(devices, "memory_bytes", lambda device: 12 * 64 * 6)  # the vectors would fill it whole
    assert main(["build", str(small_folder), "--memory", str(tmp_path / "b"), "--encoder", "test-pixels"]) == 0
    assert "hint" not in capsys.readouterr().err


def test_no_hint_for_a_memory_already_on_the_exact_backend(tmp_path, small_folder, capsys, device_reset):
    assert main(["build", str(small_folder), "--memory", str(tmp_path / "m"), "--encoder", "test-pixels",
                 "--backend", "exact", "--device", "cpu"]) == 0
    assert "hint" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_forwarded_command_runs_on_the_apps_device_and_says_so(tmp_path, small_folder):
    path = tmp_path / "m"
    with new_memory(path) as memory:
        memory.exemplars.build(small_folder)
    image = tmp_path / "q.png"
    image.write_bytes(png_bytes(np.full((28, 28), 90)))
    with held_by_a_host(path):
        asked_cuda = vmem("classify", path, image, "--device", "cuda", "--json")
        asked_cpu = vmem("classify", path, image, "--device", "cpu", "--json")
        asked_none = vmem("classify", path, image, "--json")
    for result in (asked_cuda, asked_cpu, asked_none):
        assert result.returncode == 0, result.stderr
        assert "is open in the vmem app" in result.stderr
    assert json.loads(asked_cuda.stdout) == json.loads(asked_cpu.stdout) == json.loads(asked_none.stdout)
    assert ("vmem: note: --device cuda is not applied to a command the app runs: the app encodes on cpu, searches "
            "on cpu") in asked_cuda.stderr
    assert "--device" not in asked_cpu.stderr and "--device" not in asked_none.stderr
