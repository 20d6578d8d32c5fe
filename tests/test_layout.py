"""Project-wide rules: heavy dependencies stay at their edges, and the README documents every CLI command."""

import ast
import re
import subprocess
import sys

import pytest

from vmem_core.cli import build_parser

from .conftest import REPO

# module -> the only places in vmem_core allowed to import it
EDGES = {
    "torch": ("encoders/",),
    "open_clip": ("encoders/",),
    "onnxruntime": ("encoders/",),
    "hnswlib": ("index.py",),
    "duckdb": ("store.py",),
    "streamlit": ("ui.py",),
    "google": ("rerank/gemini.py",),  # google-genai, only when a Gemini re-ranker is made
    "openai": (),  # the OpenAI-compatible re-ranker speaks plain HTTP
    "pymilvus": ("backends/milvus.py",),
    "milvus_lite": ("backends/milvus.py",),
    "ray": ("ray_build.py",),
}


def imported_modules(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("module, allowed", EDGES.items())
def test_heavy_imports_stay_at_their_edges(module, allowed):
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "vmem_core").rglob("*.py")
        if module in set(imported_modules(path))
        and not any(path.relative_to(REPO / "vmem_core").as_posix().startswith(a) for a in allowed)
    ]
    assert not offenders, f"{module} imported outside {allowed}: {offenders}"


def test_importing_vmem_core_loads_no_model_sdk():
    # importing the library (and the CLI's parser, the re-ranking package, the index backends) must not pay for an
    # SDK import, nor for the optional scale-out engines (requirements-scale.txt), which may not even be installed
    code = ("import sys, vmem_core, vmem_core.rerank, vmem_core.text_query, vmem_core.cli, vmem_core.backends, "
            "vmem_core.memory, vmem_core.unlearn; vmem_core.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('google', 'openai', 'httpx', 'httpx2', 'ray', "
            "'pymilvus', 'milvus_lite')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_cli_command_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices
    missing = [name for name in commands if not re.search(rf"vmem {name}\b", readme)]
    assert not missing, f"commands missing from README.md: {missing}"

