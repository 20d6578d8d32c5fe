"""The wheel is the product: it holds the library, the app and the sample data, and runs with no checkout around."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import tomllib

from .browser import free_port
from .helpers import REPO, SAMPLE


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the working tree, the way `pip install .` builds one (no editable install involved)."""
    out = tmp_path_factory.mktemp("wheel")
    # from a copy: setuptools leaves build/ in the tree it builds, and a stale build/lib would slip removed modules
    # into the next wheel; the copy has the working tree's files as they are, committed or not
    source = tmp_path_factory.mktemp("source") / "vmem"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "*.vmem",
                                                                "__pycache__", ".pytest_cache"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(out), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [path] = out.glob("vmem-*.whl")
    return path


def test_every_subpackage_is_listed_in_pyproject():
    # [tool.setuptools] packages is a whitelist: a folder missing from it is silently left out of the wheel
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "vmem_core").rglob("__init__.py")}
    assert found - listed == set(), f"subpackages missing from pyproject.toml: {sorted(found - listed)}"


def test_wheel_holds_the_app_its_settings_and_the_sample_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "vmem_core/app/app.py" in names
    assert "vmem_core/app/.streamlit/config.toml" in names
    pages = {p.name for p in (REPO / "pages").glob("*.py")}
    assert pages and {f"vmem_core/app/pages/{page}" for page in pages} <= names
    assert {"vmem_core/rerank/__init__.py", "vmem_core/backends/__init__.py", "vmem_core/cli/__init__.py"} <= names
    shipped = {p.relative_to(SAMPLE.parent).as_posix() for p in SAMPLE.rglob("*") if p.is_file()}
    shipped |= {p.relative_to(SAMPLE.parent).as_posix() for p in (SAMPLE.parent / "ood").glob("*.jpg")}
    assert len(shipped) > 1000
    missing = {f"vmem_core/sample_data/{name}" for name in shipped} - names
    assert not missing, sorted(missing)[:5]
    # nothing lands at the top of site-packages but vmem_core and the metadata (no `pages` or `data` packages)
    assert {name.split("/")[0] for name in names} == {"vmem_core", wheel.name.split("-py3")[0] + ".dist-info"}


@pytest.mark.slow
def test_installed_wheel_works_from_an_empty_folder(wheel, tmp_path):
    target, empty, data_home = tmp_path / "target", tmp_path / "empty", tmp_path / "xdg-data"
    empty.mkdir()
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    # only the target on the path, the checkout nowhere: not as the working folder, not in PYTHONPATH
    env = {key: value for key, value in os.environ.items() if key not in ("VMEM_HOME", "VMEM_MEMORY")}
    env.update(PYTHONPATH=str(target), XDG_DATA_HOME=str(data_home), PYTHONSAFEPATH="1")

    def vmem(*args, timeout=600):
        return subprocess.run([sys.executable, "-m", "vmem_core", *map(str, args)], cwd=empty, env=env,
                              capture_output=True, text=True, timeout=timeout)

    where = subprocess.run([sys.executable, "-c", "import vmem_core; print(vmem_core.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(target), where

    demo = vmem("demo", "--no-app")
    assert demo.returncode == 0, demo.stderr
    memory = data_home / "vmem" / "sample.vmem"  # the user's data folder, not site-packages nor the working folder
    assert f"building the sample memory at {memory}" in demo.stdout
    assert "accuracy on the 200-image query split" in demo.stdout
    assert list(empty.iterdir()) == [] and not list(target.rglob("vmem.json"))

    deleted = vmem("delete", memory, 3)
    assert deleted.returncode == 0, deleted.stderr
    purged = vmem("purge", memory, 3)
    assert purged.returncode == 0, purged.stderr + purged.stdout
    stats = vmem("stats", memory, "--json")
    assert stats.returncode == 0, stats.stderr
    assert '"exemplars": 999' in stats.stdout

    port = free_port()
    # a session of its own: `vmem app` starts streamlit as its child, and both must stop at the end
    app = subprocess.Popen([sys.executable, "-m", "vmem_core", "app", "--port", str(port), "--headless"], cwd=empty,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        deadline, answer = time.monotonic() + 90, None
        while time.monotonic() < deadline and app.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
                    answer = reply.read().decode()
                    break
            except OSError:
                time.sleep(0.5)
        assert answer == "ok", app.stdout.read() if app.poll() is not None else "no answer from the health endpoint"
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        app.wait(30)
