"""Who may change the memory: viewers and editors, sign-in, --read-only, and `vmem app` on a network address."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vmem_core.access import AccessPolicy, hash_secret, is_loopback
from vmem_core.errors import AccessDeniedError, VmemError
from vmem_core.host import HOST_FILE

from .helpers import REPO, TIMEOUT, texts, vmem

EDITOR_SECRET, VIEWER_SECRET = "editor-token-4f9b2c", "viewer-token-81d3e7"


def test_a_secret_grants_its_role_and_the_file_holds_no_secret(tmp_path):
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"editor": [hash_secret(EDITOR_SECRET)], "viewer": [hash_secret(VIEWER_SECRET)]}))
    assert EDITOR_SECRET not in auth.read_text()
    policy = AccessPolicy.from_environment({"VMEM_AUTH_FILE": str(auth)})
    assert policy.requires_sign_in and policy.default_role() is None
    assert policy.role_for(EDITOR_SECRET) == "editor" and policy.role_for(VIEWER_SECRET) == "viewer"
    assert policy.role_for(EDITOR_SECRET[:-1]) is None and policy.role_for("") is None
    from_env = AccessPolicy.from_environment({"VMEM_VIEWER_PASSWORD": VIEWER_SECRET})
    assert from_env.role_for(VIEWER_SECRET) == "viewer" and EDITOR_SECRET not in json.dumps(from_env.hashes)
    assert AccessPolicy.from_environment({}).default_role() == "editor"  # this machine only: one role
    assert AccessPolicy.from_environment({"VMEM_APP_READ_ONLY": "1", "VMEM_EDITOR_PASSWORD": "x" * 12}
                                         ).default_role() == "viewer"


@pytest.mark.parametrize("content, message", [
    ('{"editor": ["' + EDITOR_SECRET + '"]}', "not a hash made by `vmem app --hash-password`"),
    ('{"admin": []}', "holds ['admin']; accepted: an object with the roles viewer, editor"),
    ("not json", "unreadable"),
])
def test_a_bad_auth_file_is_named_and_the_app_does_not_start(tmp_path, content, message):
    auth = tmp_path / "auth.json"
    auth.write_text(content)
    with pytest.raises(VmemError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AccessPolicy.from_environment({"VMEM_AUTH_FILE": str(auth)})
    result = vmem("app", "--auth-file", auth, "--address", "0.0.0.0")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert str(auth) in result.stderr and EDITOR_SECRET not in result.stderr


def test_app_on_a_network_address_refuses_to_start_without_a_sign_in():
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMEM_")}
    result = subprocess.run([sys.executable, "-m", "vmem_core.cli", "app", "--address", "0.0.0.0"], env=env,
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "vmem: error: --address 0.0.0.0 serves other machines, and without a sign-in anyone reaching it could change "
        "and purge the memory: give --auth-file PATH (hashes from `vmem app --hash-password`) or set "
        "VMEM_EDITOR_PASSWORD, or pass --read-only"]
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def test_hash_password_prints_a_hash_that_signs_in(tmp_path):
    made = subprocess.run([sys.executable, "-m", "vmem_core.cli", "app", "--hash-password"], input=EDITOR_SECRET + "\n",
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert made.returncode == 0, made.stderr
    stored = made.stdout.strip()
    assert stored.startswith("scrypt$") and EDITOR_SECRET not in stored
    assert AccessPolicy(hashes={"editor": [stored]}).role_for(EDITOR_SECRET) == "editor"
    short = subprocess.run([sys.executable, "-m", "vmem_core.cli", "app", "--hash-password"], input="short\n",
                           capture_output=True, text=True, cwd=REPO, timeout=120)
    assert short.returncode == 2 and "5 characters is too easy to guess; use 12 or more" in short.stderr


def test_a_viewer_handle_reads_and_refuses_every_change(memory):
    viewer = memory.reader()
    assert len(viewer) == 12 and list(viewer.table.labels) == list(memory.table.labels)
    for change in (lambda: viewer.exemplars.delete([0]), lambda: viewer.exemplars.relabel([0], "x"), lambda: viewer.exemplars.add([b""], "x"),
                   lambda: viewer.exemplars.exclusive()):
        with pytest.raises(AccessDeniedError, match="viewers cannot change this memory"):
            change()
    from vmem_core.unlearn import purge

    memory.exemplars.delete([1])
    with pytest.raises(AccessDeniedError):
        purge(viewer, [1])
    assert len(memory) == 11 and memory.exemplars.tombstoned_ids() == [1]  # nothing purged


def _page(page: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _keys(at) -> set:
    return {b.key for b in at.button} | {c.key for c in at.checkbox}


@pytest.mark.slow
def test_a_read_only_app_shows_no_edit_controls_and_serves_only_reads(app, tmp_path, monkeypatch):
    path = Path(os.environ["VMEM_MEMORY"])
    monkeypatch.setenv("VMEM_APP_READ_ONLY", "1")
    memory_page = _page("pages/memory.py")
    assert not {"add-button", "relabel-button", "delete-button"} & _keys(memory_page)
    assert not [k for k in _keys(memory_page) if str(k).startswith("browse-")]  # no ticking exemplars
    assert "Read-only: this app shows the memory and changes nothing." in [c.value for c in memory_page.sidebar.caption]
    unlearning = _page("pages/unlearning.py")
    assert "forget-button" not in _keys(unlearning) and "an editor can forget and purge" in texts(unlearning)
    curate = _page("pages/curate.py")
    assert not [k for k in _keys(curate) if str(k).startswith(("curate-del", "curate-rel", "curate-dupdel"))]

    # the CLI commands the app serves for other processes follow the same rule
    assert (path / HOST_FILE).exists()
    refused = vmem("delete", path, 0)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith(
        "vmem: error: the app holding this memory is read-only: 'delete' is refused; accepted: stats, classify")
    stats = vmem("stats", path, "--json")
    assert stats.returncode == 0 and json.loads(stats.stdout)["exemplars"] == 12


@pytest.mark.slow
def test_a_forged_change_from_a_viewer_session_changes_nothing(app, monkeypatch):
    """A viewer's session that reaches an editor's code path (as a forged widget event would) is refused by the
    memory handle the page got, not by the missing button."""
    monkeypatch.setenv("VMEM_APP_READ_ONLY", "1")

    def forged():
        import streamlit as st

        from vmem_core import VmemError, ui

        memory, _ = ui.page_setup()
        for change in (lambda: memory.exemplars.delete([0]), lambda: memory.exemplars.relabel([1], "forged")):
            try:
                change()
            except VmemError as exc:
                st.error(str(exc))
        st.write(f"live {len(memory)}")

    at = AppTest.from_function(forged, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        "viewers cannot change this memory (delete refused); sign in as an editor",
        "viewers cannot change this memory (relabel refused); sign in as an editor"]
    assert "live 12" in texts(at)


def sign_in(at, secret: str) -> None:
    at.text_input(key="sign-in-secret").input(secret)  # a form's fields are sent with its submit button
    at.button[0].click().run()
    assert not at.exception, at.exception


@pytest.mark.slow
def test_sign_in_gives_each_secret_its_role_and_an_editor_can_purge(app, monkeypatch):
    monkeypatch.setenv("VMEM_EDITOR_PASSWORD", EDITOR_SECRET)
    monkeypatch.setenv("VMEM_VIEWER_PASSWORD", VIEWER_SECRET)
    at = _page("pages/memory.py")
    assert [t.value for t in at.title] == ["Sign in"] and "Memory" not in texts(at)
    sign_in(at, "a guess")
    assert [e.value for e in at.error] == ["That password or token opens no role here."]
    sign_in(at, VIEWER_SECRET)
    assert "Memory" in [t.value for t in at.title] and "add-button" not in _keys(at)
    assert "Signed in as viewer." in [c.value for c in at.sidebar.caption]
    at.button(key="sign-out").click().run()
    sign_in(at, EDITOR_SECRET)
    assert "Signed in as editor." in [c.value for c in at.sidebar.caption]
    at.switch_page("pages/unlearning.py").run()
    at.button(key="forget-button").click().run()
    at.button(key="purge-button").click().run()
    at.button(key="confirm-purge-yes").click().run()
    assert not at.exception and at.header[-1].value == "5. The certificate"
    assert any(s.value.startswith("All checks passed") for s in at.success)
