"""The app and the CLI on one memory: `vmem` commands sent to the process that holds the memory open."""

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vmem_core import VisualMemory
from vmem_core.host import HOST_FILE

from .browser import browser_available, chromium, streamlit_server, wait_for
from .helpers import REPO, TIMEOUT, database_held_elsewhere, png_bytes, sample_folder, vmem


@pytest.fixture
def app_holding(app):
    """An app session (AppTest, in this process) that has opened a 12-exemplar memory, and the memory's path."""
    assert "12 exemplars" in app.sidebar.markdown[0].value
    return app, Path(os.environ["VMEM_MEMORY"])


@pytest.mark.slow
def test_cli_commands_run_in_the_app_and_the_app_sees_them(app_holding, tmp_path):
    at, path = app_holding
    assert (path / HOST_FILE).stat().st_mode & 0o077 == 0  # the token is for the memory's owner only
    stats = vmem("stats", path, "--json", cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["exemplars"] == 12
    assert "is open in the vmem app" in stats.stderr and "Traceback" not in stats.stderr

    image = tmp_path / "hat.png"
    image.write_bytes(png_bytes(np.full((28, 28), 90)))
    added = vmem("add", "app.vmem", "hat.png", "--label", "hat", "--json", cwd=tmp_path)  # relative paths
    assert added.returncode == 0, added.stderr
    new_id = json.loads(added.stdout)["ids"][0]
    assert vmem("delete", path, 0).returncode == 0
    classified = vmem("classify", path, image, "--k", "1", "--json")
    assert json.loads(classified.stdout)[0]["label"] == "hat"

    at.run()  # the session's next rerun shows both changes
    assert "12 exemplars, 4 classes" in at.sidebar.markdown[0].value
    fresh = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)  # so does another session
    fresh.switch_page("pages/memory.py").run()
    assert "12 live exemplars in 4 labels" in [e.label for e in fresh.expander]

    failed = vmem("delete", path, 999)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1] == "vmem: error: unknown exemplar id(s): 999"
    log = json.loads(vmem("audit", path, "--json").stdout)
    assert [(e["action"], e["actor"].split(" via ")[1]) for e in log[-2:]] == [
        ("add", "cli through app"), ("delete", "cli through app")]
    assert json.loads(added.stdout)["ids"] == [new_id] and new_id == 12


def test_attribute_runs_in_the_app_with_paths_from_the_callers_folder(app_holding, tmp_path):
    at, path = app_holding  # tmp_path/app.vmem, built from the 12 images in tmp_path/small
    influence = vmem("attribute", "app.vmem", "--queries", "small", "--k", "3", "--json", cwd=tmp_path)
    assert influence.returncode == 0, influence.stderr
    assert "is open in the vmem app" in influence.stderr and "Traceback" not in influence.stderr
    payload = json.loads(influence.stdout)
    assert payload["queries"] == 12 and payload["k"] == 3
    assert payload["exemplars"] and {row["id"] for row in payload["exemplars"]} <= set(range(12))

    explained = vmem("attribute", "app.vmem", "small/bag", "--k", "3", "--json", cwd=tmp_path)
    assert explained.returncode == 0, explained.stderr
    rows = json.loads(explained.stdout)
    assert [Path(r["image"]).resolve() for r in rows] == sorted((tmp_path / "small" / "bag").resolve().glob("*.png"))
    assert all(r["label"] == "bag" and len(r["neighbors"]) == 3 for r in rows)  # each image is its own exemplar


def test_path_options_reach_the_holder_as_absolute_paths(tmp_path, monkeypatch):
    from vmem_core.cli import build_parser, client_request

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["eval", "mem", "queries", "--experiment", "all", "--taxonomy", "levels.csv",
                                      "--ood-images", "ood", "--synonyms", "words.json"])
    request = json.loads(json.dumps(client_request(args)))  # what the holder, in another folder, receives
    names = {"memory": "mem", "queries": "queries", "taxonomy": "levels.csv", "ood_images": "ood",
             "synonyms": "words.json"}
    assert {key: request[key] for key in names} == {key: str(tmp_path.resolve() / name) for key, name in names.items()}
    (tmp_path / "weights.pth").write_bytes(b"")  # a checkpoint by a relative path; a pretrained tag stays a tag
    for given, sent in [("timm:resnet18:weights.pth", f"timm:resnet18:{tmp_path.resolve() / 'weights.pth'}"),
                        ("timm:vit_small_patch14_dinov2:lvd142m", "timm:vit_small_patch14_dinov2:lvd142m"),
                        ("efficientnet-lite0", "efficientnet-lite0")]:
        args = build_parser().parse_args(["build", "data", "--memory", "mem", "--encoder", given])
        assert json.loads(json.dumps(client_request(args)))["encoder"] == sent


def test_holder_that_serves_nothing_gives_a_one_line_error(memory, tmp_path):
    path = memory.path
    memory.close()
    with database_held_elsewhere(path) as holder:
        (path / HOST_FILE).write_text(json.dumps({"pid": 2**22 + 12345, "port": 1, "token": "x"}))  # stale
        result = vmem("stats", path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "is open in another process" in result.stderr and "close that process" in result.stderr
        (path / HOST_FILE).write_text(json.dumps({"pid": holder.pid, "port": 1, "token": "x"}))  # answers nothing
        result = vmem("delete", path, 1)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "did not answer" in result.stderr.splitlines()[-1]
    with VisualMemory.open(path) as mem:
        assert len(mem) == 12  # nothing was deleted


def test_host_refuses_requests_without_its_token(app_holding):
    at, path = app_holding
    port = json.loads((path / HOST_FILE).read_text())["port"]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/run", method="POST",
                                     data=json.dumps({"command": "delete", "memory": str(path), "ids": [1]}).encode(),
                                     headers={"X-Vmem-Token": "guess"})
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(request, timeout=10)
    at.run()
    assert "12 exemplars" in at.sidebar.markdown[0].value


@pytest.mark.skipif(not browser_available() and not os.environ.get("CI"),
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
@pytest.mark.slow
def test_cli_beside_a_running_app_server(tmp_path):
    """The real thing: `streamlit run` in a subprocess with a browser session open on it, `vmem` in another."""
    from selenium.webdriver.common.by import By

    data = sample_folder(tmp_path / "data", ("bag", "trouser"), per_label=3)
    path = tmp_path / "mem.vmem"
    with VisualMemory.create(path) as memory:  # the default encoder: the app process has no test encoders
        memory.exemplars.build(data)

    def sidebar(driver):
        return driver.find_element(By.CSS_SELECTOR, "[data-testid='stSidebar']").text

    with streamlit_server(path) as url, chromium() as driver:
        driver.get(url)
        wait_for(driver, lambda d: "6 exemplars, 2 classes" in sidebar(d), what="the app opening the memory")
        added = vmem("add", path, REPO / "data" / "ood" / "coffee.jpg", "--label", "cup", "--json")
        assert added.returncode == 0, added.stderr
        assert "is open in the vmem app" in added.stderr
        deleted = vmem("delete", path, 0)
        assert deleted.returncode == 0 and "Traceback" not in deleted.stderr
        stats = json.loads(vmem("stats", path, "--json").stdout)
        assert stats["exemplars"] == 6 and stats["labels"] == {"bag": 2, "cup": 1, "trouser": 3}
        driver.refresh()
        wait_for(driver, lambda d: "6 exemplars, 3 classes" in sidebar(d), what="the app showing the CLI's changes")
    assert not (path / HOST_FILE).exists()  # the app removed its address when it stopped
    with VisualMemory.open(path) as memory:  # and the file is free again
        assert list(memory.table.labels) == ["bag", "cup", "trouser"] and len(memory) == 6


def test_a_command_run_for_a_client_has_its_own_streams_and_no_terminal(capsys):
    import sys
    import threading

    from vmem_core.host import run_captured

    running, printed = threading.Event(), threading.Event()

    def app_thread():  # another session of the app printing while the client's command runs
        running.wait(30)
        print("from the app")
        printed.set()

    def command(request):
        print(sys.stdin.isatty(), repr(sys.stdin.readline()))  # a question would get no answer, never the app's tty
        running.set()
        assert printed.wait(30)
        print("warning", file=sys.stderr)
        return 3

    other = threading.Thread(target=app_thread)
    other.start()
    reply = run_captured(command, {})
    other.join()
    assert reply == {"status": 3, "stdout": "False ''\n", "stderr": "warning\n"}
    assert capsys.readouterr().out == "from the app\n"  # other threads keep the process's own streams


def test_a_failing_command_is_reported_not_mistaken_for_a_dead_app(tmp_path):
    from vmem_core.host import Host, find_host, send

    def broken(request):
        raise RuntimeError(f"bug while running {request['command']}")

    host = Host(tmp_path, broken)
    try:
        reply = send(find_host(tmp_path), {"command": "stats"})
        assert reply["status"] == 1
        assert reply["stderr"] == "vmem: internal error in the app process: RuntimeError('bug while running stats')\n"
    finally:
        host.stop()
    assert find_host(tmp_path) is None  # stopping removed its address


def test_a_token_with_non_ascii_characters_is_refused_not_dropped(tmp_path):
    from vmem_core.host import TOKEN_HEADER, Host

    ran = []
    host = Host(tmp_path, ran.append)
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{host.port}/run", method="POST", data=b"{}",
                                         headers={TOKEN_HEADER: "caf\u00e9"})  # sent as Latin-1
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(request, timeout=10)
    finally:
        host.stop()
    assert ran == []


def test_a_holder_that_accepts_and_never_answers_is_given_up_with_its_address(tmp_path):
    import socket
    import threading
    import time

    from vmem_core.host import HostAddress, HostUnreachableError, send

    connections = []
    with socket.create_server(("127.0.0.1", 0)) as server:  # a stopped or hung app: the connection opens, then nothing
        threading.Thread(target=lambda: connections.append(server.accept()), daemon=True).start()
        port = server.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(HostUnreachableError) as info:
            send(HostAddress(os.getpid(), port, "token"), {"command": "stats"}, silence_timeout_s=0.3)
        assert time.monotonic() - started < 10
    for connection, _ in connections:
        connection.close()
    assert len(connections) == 1  # it did connect: the reply is what never came
    message = str(info.value)
    assert f"at 127.0.0.1:{port} sent nothing for 0.3 s" in message and "\n" not in message


def test_a_command_longer_than_the_silence_limit_is_kept_alive_by_the_heartbeat(tmp_path):
    import time

    from vmem_core.host import Host, find_host, send

    def slow(request):  # a build, shortened: three times the client's silence limit
        time.sleep(0.9)
        print(f"{request['command']} done")
        return 0

    host = Host(tmp_path, slow, heartbeat_s=0.05)
    try:
        reply = send(find_host(tmp_path), {"command": "build"}, silence_timeout_s=0.3)
    finally:
        host.stop()
    assert reply == {"status": 0, "stdout": "build done\n", "stderr": ""}
