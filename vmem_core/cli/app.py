"""`vmem app` and `vmem demo`: start the Streamlit app, and the guided first run on the shipped sample.

Streamlit left to itself asks a new user for an e-mail address (and exits 255 when there is no terminal to ask on),
reports usage statistics, watches every file under the folder it was started in, and opens a browser only when it is
not headless. `vmem app` therefore always runs it headless with statistics and the watcher off, waits until it
answers, prints the URL, and opens the browser itself when there is a display to open it on.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import webbrowser
from pathlib import Path
from typing import Mapping

from .common import UsageError, progress_bar

DEV_VARIABLE = "VMEM_DEV"  # set (to anything but "" or "0") to turn Streamlit's file watcher on, as `--dev` does
DEFAULT_PORT = 8501
PORTS_TRIED = 100  # from DEFAULT_PORT up, when no --port is given: the first free one
START_TIMEOUT_SECONDS = 120  # a cold first start imports torch and opens the memory on a loaded machine


def display_available(platform: str = sys.platform, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a browser opened here would be seen: always on macOS and Windows; on Linux and the BSDs only under
    X11 or Wayland (an SSH session or a container has neither, and a text browser would take over the terminal)."""
    if platform == "darwin" or platform.startswith("win"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def dev_mode(args, environ: Mapping[str, str] = os.environ) -> bool:
    return bool(getattr(args, "dev", False)) or environ.get(DEV_VARIABLE, "") not in ("", "0")


def free_port(address: str, first: int = DEFAULT_PORT, tries: int = PORTS_TRIED) -> int:
    """The first port from `first` on which `address` can listen."""
    host = "127.0.0.1" if address in ("", "0.0.0.0", "localhost") else address
    for port in range(first, first + tries):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise UsageError(f"no free port in {first}..{first + tries - 1} on {address}; choose one with --port")


def streamlit_command(app: Path, address: str, port: int, dev: bool) -> list[str]:
    """The `streamlit run` command line; --server.* options also carry .streamlit/config.toml's settings, which
    streamlit reads only from the folder it is started in."""
    from ..ingest.images import MAX_UPLOAD_MEGABYTES

    return [sys.executable, "-m", "streamlit", "run", str(app),
            "--server.headless", "true",  # no e-mail prompt, no browser of streamlit's own
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "auto" if dev else "none",
            "--server.runOnSave", "false",
            "--client.toolbarMode", "minimal",
            "--server.address", address, "--server.port", str(port),
            "--server.maxUploadSize", str(MAX_UPLOAD_MEGABYTES)]


def app_url(address: str, port: int) -> str:
    host = "localhost" if address in ("127.0.0.1", "0.0.0.0", "", "localhost") else address
    return f"http://{host}:{port}"


def _wait_until_serving(server: subprocess.Popen, address: str, port: int) -> bool:
    """True once the server answers its health check; False if it exited first or did not answer in time."""
    host = "127.0.0.1" if address in ("0.0.0.0", "") else address
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def _stop_with_this_process():
    """On Linux, what the server's process runs before Streamlit starts: ask the kernel to send it SIGTERM when this
    process dies, even by SIGKILL, which no handler here can forward (the server was left serving, orphaned). prctl
    is looked up here, before the fork, so that the child only calls it. None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def stop_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)

    return stop_with_parent


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def cmd_app(args) -> int:
    from ..access import AUTH_FILE_ENV, READ_ONLY_ENV, AccessPolicy, hash_secret, is_loopback
    from ..resources import app_script

    if getattr(args, "hash_password", False):
        print(hash_secret(_read_secret()))
        return 0
    env = dict(os.environ)
    if getattr(args, "auth_file", None):
        env[AUTH_FILE_ENV] = str(Path(args.auth_file).resolve())
    if getattr(args, "read_only", False):
        env[READ_ONLY_ENV] = "1"
    policy = AccessPolicy.from_environment(env)  # a broken auth file is reported here, not in the browser
    address = getattr(args, "address", None) or "127.0.0.1"
    if not is_loopback(address) and not policy.read_only and not policy.requires_sign_in:
        raise UsageError(f"--address {address} serves other machines, and without a sign-in anyone reaching it could "
                         "change and purge the memory: give --auth-file PATH (hashes from `vmem app --hash-password`) "
                         "or set VMEM_EDITOR_PASSWORD, or pass --read-only")
    if args.memory:
        refuse_a_held_memory(Path(args.memory))
    app = app_script()
    if not app.exists():
        raise UsageError(f"the app is not installed: {app} is missing (reinstall vmem)")
    port = args.port or free_port(address)
    if getattr(args, "device", None):
        env["VMEM_DEVICE"] = args.device  # the app's process resolves it (vmem_core.devices)
    if args.memory:
        env["VMEM_MEMORY"] = str(Path(args.memory).resolve())
    if getattr(args, "rerank", None):
        from ..rerank import parse_spec

        parse_spec(args.rerank)  # a typo is reported here, not in the browser
        env["VMEM_RERANK"] = args.rerank
    # stdin from /dev/null: nothing the server runs may wait for a terminal that a background start does not have
    server = subprocess.Popen(streamlit_command(app, address, port, dev_mode(args)), env=env,
                              stdin=subprocess.DEVNULL, preexec_fn=_stop_with_this_process())
    # a plain `kill` of vmem stops the server too (Ctrl+C reaches both through the terminal's process group)
    previous = signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        if _wait_until_serving(server, address, port):
            url = app_url(address, port)
            print(f"vmem app: serving {env.get('VMEM_MEMORY') or 'the sample memory'} at {url} (Ctrl+C to stop)",
                  flush=True)
            if not args.headless and display_available():
                webbrowser.open(url)
        elif server.poll() is None:
            print(f"vmem app: the server has not answered on port {port} after {START_TIMEOUT_SECONDS} s; "
                  "still waiting for it", file=sys.stderr, flush=True)
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return server.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def refuse_a_held_memory(path: Path) -> None:
    """A second app on a memory another process holds would start and serve pages that only say so: refuse at
    start, as every other command does."""
    from ..storage.layout import is_memory
    from ..storage.owner_lock import holder

    if not is_memory(path):
        return
    pid = holder(path)
    if pid is not None:
        raise UsageError(f"memory {path} is open in another process{f' (pid {pid})' if pid else ''}, for example "
                         "another vmem app: use that app, or stop that process and start this one again")


def _read_secret() -> str:
    import getpass

    from ..access import check_secret

    secret = getpass.getpass("password or token: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    return check_secret(secret, "--hash-password")


def cmd_demo(args) -> int:
    """Build the sample memory (once), then classify sample queries and evaluate on the query split."""
    from ..analysis.evaluate import evaluate_dataset
    from ..analysis.ood import judge
    from ..memory import VisualMemory
    from ..resources import default_memory, ood_dir, sample_data
    from ..sample_memory import build_sample_memory, completeness
    from ..storage.layout import is_memory

    memory_path = Path(args.memory) if args.memory else default_memory()
    samples = sample_data()
    if not is_memory(memory_path):
        print(f"building the sample memory at {memory_path} from {samples / 'memory'} ...")
        build_sample_memory(memory_path, progress=progress_bar("build"))
    else:
        print(f"the sample memory: {memory_path}")
    with VisualMemory.open(memory_path) as memory:
        shipped = completeness(memory)
        if not shipped.complete:
            print(f"warning: {shipped.explain(memory_path)}", file=sys.stderr)
        queries = sorted((samples / "queries").glob("*/*.png"))[:: 40] + sorted(ood_dir().glob("*"))
        print(f"\nclassifying {len(queries)} sample queries (true label = folder name; ood/ = photos of things the "
              "memory has never seen):")
        if len(memory) == 0:
            raise UsageError(f"{memory_path} holds no live exemplars; restore some (`vmem restore`) or remove the "
                             "folder so that the demo builds it again")
        for result in memory.classify(queries, k=args.k):
            near = result.neighbors[0]
            name = f"{Path(result.image).parent.name}/{Path(result.image).name}"
            flag = "  <- out of distribution?" if judge(memory, near.distance).is_ood else ""
            print(f"  {name:<22} -> {result.label:<11} nearest exemplar {near.id:>4} ({near.label}) "
                  f"at distance {near.distance:.3f}{flag}")
        result = evaluate_dataset(memory, samples / "queries", progress=progress_bar("eval"))
    k = min(args.k, result.k_max)
    print(f"\naccuracy on the {result.queries}-image query split at k={k}: "
          + ", ".join(f"{rule} {curve[k - 1]:.3f}" for rule, curve in result.accuracy.items()))
    print(f"more: vmem stats {memory_path} | vmem classify {memory_path} IMAGE | vmem eval {memory_path} "
          f"{samples / 'queries'}")
    if args.no_app:
        return 0
    print(f"\nstarting the app on {memory_path} (Ctrl+C to stop) ...", flush=True)
    return cmd_app(argparse.Namespace(memory=str(memory_path), port=args.port, headless=args.headless,
                                      address="127.0.0.1", device=getattr(args, "device", None),
                                      dev=getattr(args, "dev", False)))


