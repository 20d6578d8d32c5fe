"""Commands for a memory that another process holds: the holder serves them, the CLI sends them there.

DuckDB lets one process open a database file, so while the app has a memory open, `vmem add MEM ...` cannot open it.
Instead the app serves a small HTTP endpoint on the loopback interface and writes where it listens, with a random
token, to `MEM/host.json` (readable by its owner only: whoever can read it could change the memory's files anyway).
The CLI, refused by the lock, reads that file and asks the app to run the command on its own open handle; the output
and exit status come back as if the command had run locally, and every session of the app sees the change on its next
rerun (they share that handle).
"""

from __future__ import annotations

import atexit
import hmac
import http.client
import io
import json
import os
import secrets
import sys
import threading
import traceback
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Optional

from .errors import VmemError
from .storage.layout import HOST_FILE

TOKEN_HEADER = "X-Vmem-Token"

# A command may rightly run for hours in the holder (a build of a million images), so the client cannot bound the
# reply's time; it bounds the holder's silence instead. The holder sends its headers at once and then a space every
# HEARTBEAT_S seconds until the reply (JSON ignores leading whitespace), and the client gives up after
# SILENCE_TIMEOUT_S without a byte: a holder stopped with Ctrl+Z or hung as a whole. A timeout on connecting alone
# would catch neither (the kernel still accepts connections into a stopped process's backlog), and a holder that died
# needs no timeout at all (on the loopback interface its kernel closes the connection at once). The limit is generous
# so that a holder busy on every core still gets a heartbeat out.
HEARTBEAT_S = 5.0
SILENCE_TIMEOUT_S = 60.0

Runner = Callable[[dict], int]  # runs a command given as a JSON object of CLI arguments, returns its exit status


class HostUnreachableError(VmemError):
    """The process that holds a memory does not answer (it stopped, or is not a vmem app)."""


@dataclass(frozen=True)
class HostAddress:
    pid: int
    port: int
    token: str


# --- output of commands run for a client -----------------------------------------------------------------------------
class _ThreadRoutedStream(io.TextIOBase):
    """Stands in for sys.stdout or sys.stderr: writes from a thread running a client's command go to that command's
    buffer, every other write to the stream it replaced (the app's other threads keep printing where they did)."""

    def __init__(self, fallback, routes: threading.local, name: str) -> None:
        self.fallback = fallback
        self._routes = routes
        self._name = name

    def _target(self):
        return getattr(self._routes, self._name, None) or self.fallback

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return False if getattr(self._routes, self._name, None) else self.fallback.isatty()

    def fileno(self) -> int:
        return self.fallback.fileno()

    def readline(self, *args) -> str:
        return self._target().readline(*args)

    def read(self, *args) -> str:
        return self._target().read(*args)


_routes = threading.local()
STREAMS = ("stdin", "stdout", "stderr")


def _route_streams() -> None:
    """Install the routing streams (again, if something replaced them since)."""
    for name in STREAMS:
        current = getattr(sys, name)
        if current is not None and not isinstance(current, _ThreadRoutedStream):
            setattr(sys, name, _ThreadRoutedStream(current, _routes, name))


def run_captured(runner: Runner, request: dict) -> dict:
    """Run a client's command in this thread with its output captured: {"status", "stdout", "stderr"}. Its stdin
    is empty and no terminal, so a command that would ask a question asks for a flag instead (e.g. --yes): the
    holder's own terminal is never prompted."""
    _route_streams()
    _routes.stdin, _routes.stdout, _routes.stderr = io.StringIO(""), io.StringIO(), io.StringIO()
    try:
        status = runner(request)
        return {"status": status, "stdout": _routes.stdout.getvalue(), "stderr": _routes.stderr.getvalue()}
    finally:
        _routes.stdin = _routes.stdout = _routes.stderr = None


def serving_a_client() -> bool:
    """Whether this thread is running a command for a client (progress bars are pointless there)."""
    return getattr(_routes, "stdout", None) is not None


def _token_matches(given: str, token: str) -> bool:
    # compared as bytes: hmac.compare_digest raises TypeError on a str with non-ASCII characters, which any client
    # can send (headers are decoded as Latin-1), and the connection would drop instead of a 403
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


# --- the holder's side ------------------------------------------------------------------------------------------------
@contextmanager
def _heartbeat(stream, interval_s: float):
    """Write a space to `stream` every interval_s seconds until the block writes its reply with the function it is
    given: never in the middle of a space, and nothing after the reply."""
    writing, replied = threading.Lock(), threading.Event()

    def write(data: bytes, last: bool = False) -> None:
        with writing:
            if replied.is_set():
                return
            if last:
                replied.set()
            try:
                stream.write(data)
            except OSError:  # the client left (e.g. Ctrl+C): the command still finishes here, its reply goes nowhere
                replied.set()

    def beat() -> None:
        while not replied.wait(interval_s):
            write(b" ")

    beating = threading.Thread(target=beat, name="vmem-host-heartbeat", daemon=True)
    beating.start()
    try:
        yield lambda reply: write(reply, last=True)
    finally:
        replied.set()
        beating.join()


class Host:
    """Serves commands on one memory from a daemon thread until `stop` (or the process ends)."""

    def __init__(self, memory_path: Path, runner: Runner, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.memory_path = Path(memory_path)
        self.token = secrets.token_urlsafe(32)
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                if self.path != "/run" or not _token_matches(self.headers.get(TOKEN_HEADER, ""), host.token):
                    self.send_error(403, "not a vmem command from this memory's owner")
                    return
                try:
                    request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    if not isinstance(request, dict):
                        raise ValueError("expected a JSON object")
                except ValueError as exc:
                    self.send_error(400, f"bad request: {exc}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()  # no Content-Length: the reply ends when the connection closes (HTTP/1.0)
                with _heartbeat(self.wfile, host.heartbeat_s) as write:
                    try:
                        reply = run_captured(runner, request)
                    except Exception as exc:  # noqa: BLE001 - a bug in a command must not look like a dead app
                        traceback.print_exc()  # the whole story on the app's console
                        reply = {"status": 1, "stdout": "",
                                 "stderr": f"vmem: internal error in the app process: {exc!r}\n"}
                    write(json.dumps(reply).encode())

            def log_message(self, *args) -> None:  # requests are not worth a line on the app's console
                pass

        self.heartbeat_s = heartbeat_s
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="vmem-host", daemon=True)
        self._thread.start()
        self._write_address()
        atexit.register(self._forget_address)

    def _write_address(self) -> None:
        path = self.memory_path / HOST_FILE
        temp = path.with_name(f".{HOST_FILE}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "port": self.port, "token": self.token}, f)
        os.replace(temp, path)

    def _forget_address(self) -> None:
        address = find_host(self.memory_path, check_alive=False)
        if address is not None and address.token == self.token:  # not a later holder's
            (self.memory_path / HOST_FILE).unlink(missing_ok=True)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._forget_address()


# --- the holder's registry ------------------------------------------------------------------------------------------
# Memories this process holds, by resolved path: commands run for a client borrow the open handle instead of opening
# the file again (DuckDB would refuse: this process holds its lock).
_HOSTED: dict = {}
# What runs a client's command: the CLI's `run_for_client`, named by the process's entry point (app.py) so that the
# library never imports the command line.
_command_runner: Optional[Runner] = None


def set_command_runner(runner: Optional[Runner]) -> None:
    """Let memories this process holds run `vmem` commands sent by other processes (None: refuse them)."""
    global _command_runner
    _command_runner = runner


def host_memory(memory) -> Optional[Host]:
    """Register `memory` as held by this process and, if a command runner is set, serve CLI commands on it to other
    processes; returns the Host serving them, or None."""
    _HOSTED[str(Path(memory.path).resolve())] = memory
    if _command_runner is None:
        return None
    return Host(memory.path, _command_runner)


def hosted(path) -> Optional[object]:
    """The memory at `path` if this process holds it, else None."""
    if not isinstance(path, (str, os.PathLike)) or not _HOSTED:
        return None
    for held_path, memory in list(_HOSTED.items()):
        try:
            if os.path.samefile(held_path, path):
                return memory
        except OSError:
            continue
    return None


# --- the client's side ------------------------------------------------------------------------------------------------
def find_host(memory_path: Path, check_alive: bool = True) -> Optional[HostAddress]:
    """Where the process holding this memory serves commands, if one says so and is still running."""
    try:
        record = json.loads((Path(memory_path) / HOST_FILE).read_text())
        address = HostAddress(int(record["pid"]), int(record["port"]), str(record["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if check_alive and not process_alive(address.pid):
        return None
    return address


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs (one of another user's counts: it exists, we just may not signal it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def send(address: HostAddress, request: dict, silence_timeout_s: float = SILENCE_TIMEOUT_S) -> dict:
    """Run a command in the holder; returns {"status", "stdout", "stderr"}. As long as the holder's heartbeat comes,
    however long the command takes; HostUnreachableError after silence_timeout_s without one (see HEARTBEAT_S)."""
    where = f"127.0.0.1:{address.port}"
    message = urllib.request.Request(
        f"http://{where}/run", data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json", TOKEN_HEADER: address.token}, method="POST",
    )
    try:
        with urllib.request.urlopen(message, timeout=silence_timeout_s) as reply:  # per connect and per read
            return json.loads(reply.read())
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError and socket timeouts are OSErrors
        if isinstance(getattr(exc, "reason", exc), TimeoutError):
            raise HostUnreachableError(
                f"the process holding this memory (pid {address.pid}) at {where} sent nothing for "
                f"{silence_timeout_s:g} s: it is stopped (Ctrl+Z?) or hung; the command may still finish there, so "
                "check `vmem audit` before running it again"
            ) from None
        raise HostUnreachableError(
            f"the process holding this memory (pid {address.pid}) did not answer on {where} ({exc}); "
            "if it has stopped, run the command again"
        ) from None
