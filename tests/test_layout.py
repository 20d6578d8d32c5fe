"""Project-wide rules: heavy dependencies stay at their edges (the site's CLI reference is checked in test_docs)."""

import ast
import subprocess
import sys

import pytest

from .helpers import REPO

# module -> the only places in vmem_core allowed to import it
EDGES = {
    # the exact backend, the device choice and the batched JPEG decode (on the encoder's device) use it too
    "torch": ("encoders/", "devices.py", "backends/exact.py", "ingest/jpeg_batch.py"),
    "torchvision": ("encoders/", "ingest/jpeg_batch.py"),
    "open_clip": ("encoders/",),
    "timm": ("encoders/",),
    "onnxruntime": ("encoders/",),
    "hnswlib": ("backends/hnsw_index.py",),
    "duckdb": ("storage/store.py",),
    "streamlit": ("ui/",),
    "google": ("rerank/gemini.py",),  # google-genai, only when a Gemini re-ranker is made
    "openai": (),  # the OpenAI-compatible re-ranker speaks plain HTTP
    "pymilvus": ("backends/milvus.py",),
    "milvus_lite": ("backends/milvus.py",),
    "ray": ("ingest/ray_build.py",),
}


def _module_name(path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports() -> dict[str, set[str]]:
    """vmem_core's import graph, module -> the vmem_core modules it imports: at the top, inside a function or under
    `if TYPE_CHECKING:` alike (an annotation that names a higher module is a dependency on it all the same).

    `from . import x` counts as importing the submodule x, not its package, so that a package's __init__ that
    re-exports its parts is not a cycle with each of them."""
    paths = {_module_name(path): path for path in (REPO / "vmem_core").rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                submodules = [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in paths]
                candidates = submodules if len(submodules) == len(node.names) else [module, *submodules]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in paths:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        graph[name] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_the_package_has_no_import_cycles():
    assert import_cycles(package_imports()) == []


def test_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_imports_neither_the_cli_nor_streamlit():
    # arrows point down: app.py and pages -> ui -> library; cli -> library; the library imports neither
    graph = package_imports()
    def is_ui(name: str) -> bool:  # the app's ui package and its parts
        return name == "vmem_core.ui" or name.startswith("vmem_core.ui.")

    library = [name for name in graph if not name.startswith("vmem_core.cli") and not is_ui(name)
               and name != "vmem_core.__main__"]  # `python -m vmem_core` is the CLI
    offenders = [name for name in library if any(t.startswith("vmem_core.cli") or is_ui(t) for t in graph[name])]
    assert not offenders, f"library modules importing the CLI or the app's ui package: {offenders}"
    cli_into_ui = [name for name in graph if name.startswith("vmem_core.cli") and any(is_ui(t) for t in graph[name])]
    assert not cli_into_ui, f"the CLI imports the app's ui module: {cli_into_ui}"


def test_pages_use_the_library_never_the_cli():
    offenders = [page.name for page in (REPO / "pages").glob("*.py")
                 if any(module.startswith("vmem_core.cli") for module in _absolute_imports(page))]
    assert not offenders, f"pages importing the CLI: {offenders}"


# Layers, lowest first, each on its own: a module imports only from its own layer (its package) or a lower one.
LAYERS = [
    "errors",
    "resources",  # file and memory limits
    "devices",  # where to compute
    "storage",  # the source of truth: folder layout, DuckDB store, vault, audit chain, locks; knows no index
    "voting",
    "label_table",
    "classification",
    "neighbour_set",  # a search's neighbours, voted at any k and pruning (pure: no memory)
    "encoders",
    "backends",  # the searchable copies of the store's vectors, and their registry
    "ingest",  # reading and encoding images; knows no memory
    "memory",  # the open memory and its nouns (exemplars, search, reliability, audit), and its reader
    "purge_proof",
    "unlearn",  # tombstone, purge, journal, certificate, over memory's narrow erase interface
    "access",  # roles
    "host",  # serving CLI commands from the process that holds a memory
    "confirmation",
    "sample_memory",
    "analysis",
    "rerank",
    "cli",
    "ui",  # the app's helpers
    "__main__",
    "",  # the package's public API
]


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[1] if "." in module else "")


def test_every_module_has_a_layer():
    unplaced = [m for m in package_imports() if (m.split(".")[1] if "." in m else "") not in LAYERS]
    assert not unplaced, f"modules outside every layer of LAYERS: {unplaced}"


def test_imports_point_down_the_layers():
    upward = sorted((module, target) for module, targets in package_imports().items() for target in targets
                    if _layer(target) > _layer(module))
    assert not upward, f"imports from a higher layer: {upward}"


def test_one_module_names_every_file_in_a_memory_folder():
    from vmem_core.storage import layout

    names = {value for key, value in vars(layout).items() if key.isupper() and isinstance(value, str)
             and key.endswith(("_NAME", "_DIR", "_FILE", "_STATE", "_JOURNAL"))}
    assert len(names) >= 10
    names -= {"index", "milvus"}  # also the config's key and a backend's name: too common a word to police
    spelled_elsewhere = []
    for path in (REPO / "vmem_core").rglob("*.py"):
        if path.name == "layout.py" and path.parent.name == "storage":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                spelled_elsewhere.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not spelled_elsewhere, spelled_elsewhere


def _absolute_imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


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
    code = ("import sys, vmem_core, vmem_core.rerank, vmem_core.analysis.text_query, vmem_core.cli, vmem_core.backends, "
            "vmem_core.memory, vmem_core.unlearn; vmem_core.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('google', 'openai', 'httpx', 'httpx2', 'ray', "
            "'pymilvus', 'milvus_lite')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"



def test_a_used_memory_folder_holds_only_what_the_layout_names(memory):
    from vmem_core.host import Host
    from vmem_core.storage.layout import ENTRIES
    from vmem_core.unlearn import purge

    memory.exemplars.delete([0])
    purge(memory, [0])
    host = Host(memory.path, lambda request: 0)
    try:
        entries = {path.name for path in memory.path.iterdir()}
    finally:
        host.stop()
    assert {"vmem.json", "memory.duckdb", "certificates", "host.json", "index"} <= entries
    assert entries <= set(ENTRIES), entries - set(ENTRIES)


def test_scripts_and_benches_import_what_the_library_has():
    """bench/ and scripts/ import vmem_core inside functions too, where no test reaches them: a module moved by a
    refactor (vmem_core.ingest.sample -> vmem_core.sample_memory) broke `bench/curate.py` unseen. Every
    `from vmem_core... import name` there must name a module that exists and a name it defines."""
    import importlib

    missing = []
    for path in sorted([*REPO.glob("bench/*.py"), *REPO.glob("scripts/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vmem_core"):
                try:
                    module = importlib.import_module(node.module)
                except ImportError as exc:
                    missing.append(f"{path.name}:{node.lineno}: {node.module} ({exc})")
                    continue
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{path.name}:{node.lineno}: {node.module}.{alias.name}")
    assert not missing, "\n".join(missing)
