"""`vmem app` starts the server the same way in a terminal or in the background: headless, no prompt, no file
watcher, the URL printed, and a browser opened only where a display exists."""

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest


from vmem_core.cli.app import DEV_VARIABLE, dev_mode, display_available, streamlit_command

from .browser import free_port
from .conftest import REPO
from .helpers import new_memory


@pytest.mark.parametrize("platform, environ, expected", [
    ("linux", {}, False),  # ssh session, container, CI
    ("linux", {"DISPLAY": ":0"}, True),
    ("linux", {"WAYLAND_DISPLAY": "wayland-0"}, True),
    ("freebsd14", {"DISPLAY": ""}, False),
    ("darwin", {}, True),
    ("win32", {}, True),
])
def test_a_browser_is_opened_only_where_a_display_exists(platform, environ, expected):
    assert display_available(platform, environ) is expected


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.mark.parametrize("flag, environ, watcher", [
    (False, {}, "none"),
    (True, {}, "auto"),
    (False, {DEV_VARIABLE: "1"}, "auto"),
    (False, {DEV_VARIABLE: "0"}, "none"),
])
def test_streamlit_runs_headless_without_statistics_and_watches_files_only_in_development(flag, environ, watcher):
    dev = dev_mode(argparse.Namespace(dev=flag), environ)
    command = streamlit_command(REPO / "app.py", "127.0.0.1", 8765, dev)
    assert option(command, "--server.headless") == "true"
    assert option(command, "--browser.gatherUsageStats") == "false"
    assert option(command, "--server.fileWatcherType") == watcher
    assert option(command, "--server.port") == "8765"


def start_in_background(memory, tmp_path, display: bool):
    """`vmem app MEM` as a background job would run it: no terminal on stdin, a fresh home (no streamlit
    credentials, so streamlit would ask for an e-mail), and $BROWSER a script that records the URL it was given."""
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f"#!/bin/sh\necho \"$1\" >> {opened}\n")
    browser.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(HOME=str(tmp_path / "home"), BROWSER=str(browser))
    if display:
        env["DISPLAY"] = ":99"
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "vmem_core.cli", "app", str(memory), "--port", str(port)],
                              cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return server, port, opened


def first_line_with(server, needle: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line and server.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} (exit {server.poll()}):\n{''.join(seen)[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("display", [False, True])
def test_vmem_app_in_the_background_serves_prints_its_url_and_opens_a_browser_only_with_a_display(
        tmp_path, small_folder, display):
    memory = tmp_path / "app.vmem"
    with new_memory(memory) as created:
        created.exemplars.build(small_folder)
    server, port, opened = start_in_background(memory, tmp_path, display)
    try:
        line = first_line_with(server, f"http://localhost:{port}")
        assert "vmem app: serving" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as reply:
            assert reply.read() == b"ok"
        time.sleep(1)  # webbrowser runs $BROWSER in the background
        assert server.poll() is None
        if display:
            assert opened.read_text().split() == [f"http://localhost:{port}"]
        else:
            assert not opened.exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_the_server_stops_when_vmem_app_is_killed(tmp_path, small_folder):
    # SIGKILL reaches no handler that could forward it: the kernel must stop the server, or it serves on, orphaned
    memory = tmp_path / "app.vmem"
    with new_memory(memory) as created:
        created.exemplars.build(small_folder)
    server, port, _ = start_in_background(memory, tmp_path, False)
    try:
        first_line_with(server, f"http://localhost:{port}")
        (child,) = map(int, open(f"/proc/{server.pid}/task/{server.pid}/children").read().split())
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(child), "the Streamlit server outlived `vmem app`"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
