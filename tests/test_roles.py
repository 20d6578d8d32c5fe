"""Roles by construction: the object a viewer gets (in the library and in the app) reaches nothing that can change
the memory, however far one follows its attributes and what its methods return."""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vmem_core import VisualMemory
from vmem_core.storage.store import Store

from . import helpers
from .helpers import TIMEOUT

# every public name of VisualMemory, tried on each object as well as its own dir(): a handle that passes unknown names
# through (__getattr__) hides them from dir() but not from this walk
PROBED = {name for name in dir(VisualMemory) if not name.startswith("_")}
# what, reached, could change the memory: the objects that hold it writable, and the verbs that change it
WRITABLE = (VisualMemory, Store)
WRITABLE_MODULES = ("duckdb",)  # a database connection (an index backend or a store shows by its write verbs)
WRITE_VERBS = {"add", "add_embeddings", "build", "delete", "restore", "relabel", "purge", "erase_rows", "move_index",
               "set_search_ef", "flush", "close", "exclusive", "insert", "set_deleted", "mark_deleted", "persist",
               "record_certificate", "log_event", "execute", "rewrite", "sync", "acting_as"}


def folder_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix not in (".lock", ".wal")):
        if file.name in ("host.json", "owner.lock"):
            continue
        digest.update(str(file.relative_to(path)).encode() + file.read_bytes())
    return digest.hexdigest()


def walk(root, depth: int = 4) -> list[str]:
    """Follow every public attribute from `root`, calling those that need no argument, to `depth`; returns what
    could change the memory (a writable object reached, or a write verb that is there to call), by path."""
    found, seen, todo = [], set(), [("viewer", root, 0)]
    while todo:
        where, obj, level = todo.pop()
        if id(obj) in seen or level > depth or isinstance(obj, (str, bytes, int, float, bool, type(None), np.ndarray,
                                                                 np.generic, Path)):
            continue
        seen.add(id(obj))
        if isinstance(obj, WRITABLE) or type(obj).__module__.startswith(WRITABLE_MODULES):
            found.append(f"{where}: {type(obj).__name__}")
            continue
        if isinstance(obj, dict):
            todo.extend((f"{where}[{k!r}]", v, level + 1) for k, v in list(obj.items())[:20])
            continue
        if isinstance(obj, (list, tuple, set)):
            todo.extend((f"{where}[{i}]", v, level + 1) for i, v in enumerate(list(obj)[:20]))
            continue
        if type(obj).__module__.split(".")[0] not in ("vmem_core", "tests"):
            continue  # a library's object (a DataFrame, a lock-free value): nothing of the memory's is inside
        for name in sorted(({n for n in dir(obj) if not n.startswith("_")} | PROBED)):
            try:
                value = getattr(obj, name)
            except AttributeError:
                continue  # not there: the fail-closed answer
            if name in WRITE_VERBS and callable(value):
                found.append(f"{where}.{name}()")
                continue
            if callable(value) and not isinstance(value, type):
                try:
                    required = [p for p in inspect.signature(value).parameters.values()
                                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
                except (TypeError, ValueError):
                    continue
                if required:
                    continue
                try:
                    value = value()
                except Exception:  # noqa: BLE001 - a refusal, or a read that needs data: either way no change
                    continue
                todo.append((f"{where}.{name}()", value, level + 1))
            else:
                todo.append((f"{where}.{name}", value, level + 1))
    return found


def observed(memory_path: Path, reader) -> tuple:
    return folder_digest(memory_path), reader.change_counter, len(reader.audit.log()), len(reader)


def test_the_walk_finds_a_writable_handle():
    class Leaky:  # what today's ViewerMemory does: its index_backend returned the writable index
        def __init__(self, memory):
            self.inner = {"memory": memory}

    class Pass:
        def index_backend(self):
            return Leaky(object())

    assert walk(Leaky(VisualMemory.__new__(VisualMemory))) == ["viewer.inner['memory']: VisualMemory"]
    assert walk(Pass()) == []  # an object() is no handle


def test_a_library_reader_reaches_nothing_that_changes_the_memory(memory):
    reader = memory.reader()
    before = observed(memory.path, reader)
    assert walk(reader) == []
    assert observed(memory.path, reader) == before
    assert not hasattr(reader, "delete") and not hasattr(reader, "index_backend")
    from vmem_core.errors import AccessDeniedError

    with pytest.raises(AccessDeniedError, match=r"viewers cannot change this memory \(delete refused\)"):
        reader.delete([0])
    with pytest.raises(AccessDeniedError):
        reader.config = {}


def test_a_memory_opened_as_a_reader_reaches_nothing_that_changes_it(memory):
    path = memory.path
    memory.close()
    with VisualMemory.open_reader(path) as reader:
        before = observed(path, reader)
        found = walk(reader)
        assert found == ["viewer.close()"]  # its own lifecycle: closing a read-only memory persists nothing
        assert observed(path, reader) == before and len(reader) == 12


@pytest.mark.slow
def test_the_app_gives_a_viewer_a_reader_that_reaches_nothing_that_changes_the_memory(app, monkeypatch):
    monkeypatch.setenv("VMEM_APP_READ_ONLY", "1")
    helpers.CAUGHT.clear()

    def viewer_page():
        from tests import helpers
        from vmem_core import ui

        memory, _ = ui.page_setup()
        helpers.CAUGHT.append(memory)

    at = AppTest.from_function(viewer_page, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    (viewer,) = helpers.CAUGHT
    path = Path(os.environ["VMEM_MEMORY"])
    before = observed(path, viewer)
    assert walk(viewer) == []
    assert observed(path, viewer) == before
