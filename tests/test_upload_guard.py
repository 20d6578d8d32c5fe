"""Uploads only from sessions whose role may use them (issue 24 item 10): the policy (vmem_core.access.may_upload)
and a real server that answers 403 to a client that never signed in."""

from __future__ import annotations

import contextlib
import http.client
import http.cookies
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from vmem_core.access import ACCESS_ENV, AccessPolicy, hash_secret, may_upload

from .browser import free_port
from .helpers import REPO, new_memory

PASSWORD = "a long enough password"


def _policy(kind: str) -> AccessPolicy:
    if kind == "none":
        return AccessPolicy()
    if kind == "read-only":
        return AccessPolicy(read_only=True)
    if kind == "viewer-only":
        return AccessPolicy(hashes={"viewer": [hash_secret(PASSWORD)], "editor": []})
    return AccessPolicy(hashes={"viewer": [], "editor": [hash_secret(PASSWORD)]})


@pytest.mark.parametrize("kind, role, allowed", [
    # no access policy: the single editor role uploads, as before
    ("none", None, True), ("none", "editor", True), ("none", "viewer", True), ("none", "admin", True),
    # read-only: everyone is a viewer, who queries with uploaded images
    ("read-only", None, True), ("read-only", "viewer", True), ("read-only", "editor", True),
    # sign-in required: only a signed-in role
    ("editor-password", None, False), ("editor-password", "", False), ("editor-password", "admin", False),
    ("editor-password", "viewer", True), ("editor-password", "editor", True),
    ("viewer-only", None, False), ("viewer-only", "viewer", True), ("viewer-only", "editor", True),
])
def test_only_a_session_with_a_role_may_upload(kind, role, allowed):
    assert _policy(kind).requires_sign_in == (kind in ("editor-password", "viewer-only"))
    assert may_upload(_policy(kind), role) is allowed


def test_a_session_that_cannot_be_looked_up_has_no_role():
    from vmem_core.ui.upload_guard import session_role_of

    class Broken:
        def get_app_session(self, session_id):
            raise RuntimeError("gone")

    class Missing:
        def get_app_session(self, session_id):
            return None

    assert session_role_of(Broken(), "x") is None
    assert session_role_of(Missing(), "x") is None
    assert not may_upload(_policy("editor-password"), session_role_of(Broken(), "x"))


@contextlib.contextmanager
def _session(port: int):
    """A websocket session as a browser opens one: the XSRF cookie from the health check, then the stream; returns the
    session id streamlit gives it and the XSRF token, while the connection is open (the session must be live)."""
    from websockets.sync.client import connect

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/_stcore/health")  # where the page gets its XSRF cookie
    reply = conn.getresponse()
    reply.read()
    cookies = http.cookies.SimpleCookie()
    for header in reply.headers.get_all("Set-Cookie") or []:
        cookies.load(header)
    conn.close()
    xsrf = cookies["_streamlit_xsrf"].value
    with connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit", xsrf],
                 additional_headers={"Cookie": f"_streamlit_xsrf={xsrf}"},
                 open_timeout=30, max_size=None) as socket:
        yield _session_id(socket), xsrf


def _session_id(socket) -> str:
    """The id of the session on `socket`, once the app's script has run for it (the app guards uploads then)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    back = BackMsg()
    back.rerun_script.query_string = ""
    back.rerun_script.page_script_hash = ""
    socket.send(back.SerializeToString())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        msg = ForwardMsg()
        msg.ParseFromString(socket.recv(timeout=max(1.0, deadline - time.monotonic())))
        if msg.WhichOneof("type") == "new_session" and msg.new_session.initialize.session_id:
            session_id = msg.new_session.initialize.session_id
            # let the page's script run past its first lines (where the app guards the upload endpoint)
            while time.monotonic() < deadline:
                done = ForwardMsg()
                done.ParseFromString(socket.recv(timeout=max(1.0, deadline - time.monotonic())))
                if done.WhichOneof("type") == "script_finished":
                    return session_id
    raise AssertionError("no session id and finished script run from the server in time")


def _put(port: int, session_id: str, xsrf: str, size: int) -> int:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"\0" * size + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
               "X-Xsrftoken": xsrf, "Cookie": f"_streamlit_xsrf={xsrf}"}  # as the page sends them
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("PUT", f"/_stcore/upload_file/{session_id}/{uuid.uuid4().hex}", body=body, headers=headers)
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        conn.close()


def _uploaded_bytes(port: int) -> int:
    """The bytes of uploaded files the server holds, from its metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/_stcore/metrics", headers={"Accept": "text/plain"})
        text = conn.getresponse().read().decode(errors="replace")
    finally:
        conn.close()
    return sum(int(float(line.split()[-1])) for line in text.splitlines()
               if "UploadedFileManager" in line and not line.startswith("#"))


@pytest.mark.slow
@pytest.mark.parametrize("password, expected", [(PASSWORD, 403), (None, 204)])
def test_a_client_that_never_signed_in_cannot_upload(tmp_path, small_folder, password, expected):
    """With an editor password, a session that has not signed in is refused (403) and the server keeps nothing;
    with no access policy the same request is accepted (204), so the 403 is the guard's, not XSRF's."""
    memory = tmp_path / "app.vmem"
    with new_memory(memory) as created:
        created.exemplars.build(small_folder)
    env = {k: v for k, v in os.environ.items() if k not in ACCESS_ENV}
    env["HOME"] = str(tmp_path / "home")
    if password:
        env["VMEM_EDITOR_PASSWORD"] = password
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "vmem_core.cli", "app", str(memory), "--port", str(port),
                               "--address", "127.0.0.1"],
                              cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/_stcore/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.5)
        with _session(port) as (session_id, xsrf):
            assert _put(port, session_id, xsrf, 1024 * 1024) == expected
            kept = _uploaded_bytes(port)
            assert kept == 0 if expected == 403 else kept >= 1024 * 1024, kept
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_role_is_read_from_the_session_state():
    from vmem_core.ui.upload_guard import ROLE_KEY, session_role_of

    class Session:
        def __init__(self, state):
            self.session_state = state

    class Runtime:
        def __init__(self, state):
            self.state = state

        def get_app_session(self, session_id):
            return Session(self.state)

    assert session_role_of(Runtime({ROLE_KEY: "editor"}), "s") == "editor"
    assert session_role_of(Runtime({}), "s") is None
    assert session_role_of(Runtime({ROLE_KEY: 1}), "s") is None
