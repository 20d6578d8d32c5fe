"""Optional engines (requirements-scale.txt: ray, pymilvus, milvus-lite): their tests skip where the extras are
not installed, but never in CI, which installs them (`.ci/run`): there a missing extra is a failure."""

from __future__ import annotations

import importlib
import os

import pytest


def require(module: str):
    """Import `module`, or skip the test (outside CI) / fail it (in CI, where `CI` is set)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed but CI must run this test (pip install -r "
                        f"requirements-scale.txt): {exc}")
        pytest.skip(f"optional {module} not installed (pip install -r requirements-scale.txt)")
