"""Who may change a memory through the app: the viewer and editor roles, and the secrets that grant them.

Viewers classify, browse, evaluate and read the curation's findings; editors also add, relabel, delete, restore and
purge. The app knows the roles from:

- `vmem app --read-only` ($VMEM_APP_READ_ONLY): everyone is a viewer, no sign-in; the CLI commands it serves for
  other processes are the read-only ones too;
- an auth file (`vmem app --auth-file PATH`, $VMEM_AUTH_FILE): JSON `{"editor": [HASH, ...], "viewer": [HASH, ...]}`,
  hashes made by `vmem app --hash-password`, so the file never holds a password;
- $VMEM_EDITOR_PASSWORD / $VMEM_VIEWER_PASSWORD: a password or token each, hashed as soon as they are read.

A secret given at sign-in is hashed (scrypt, with each stored hash's own salt) and compared with hmac.compare_digest
against every stored hash, so the time taken does not tell which one, if any, matched. Without any of these the app
has one role, editor, and `vmem app` serves only this machine (127.0.0.1) unless told --read-only.

A viewer's pages get only `memory.reader()` (vmem_core.memory.reader): an object that defines reads alone, so a role
fails closed by construction rather than by a list of refused names.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from .errors import VmemError

ROLES = ("viewer", "editor")
READ_ONLY_ENV = "VMEM_APP_READ_ONLY"
AUTH_FILE_ENV = "VMEM_AUTH_FILE"
PASSWORD_ENV = {"editor": "VMEM_EDITOR_PASSWORD", "viewer": "VMEM_VIEWER_PASSWORD"}
ACCESS_ENV = (READ_ONLY_ENV, AUTH_FILE_ENV, *PASSWORD_ENV.values())  # every setting the policy reads
# scrypt at n=2^14, r=8 takes ~50 ms and 16 MiB per try here: cheap for a sign-in, dear for guessing
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_SECRET_LENGTH = 12  # characters, spaces around it not counted: for --hash-password and the environment alike


def check_secret(secret: str, where: str) -> str:
    """`secret` if it is long enough to resist guessing; VmemError naming `where` it came from (never the secret)."""
    if len(secret.strip()) < MIN_SECRET_LENGTH:
        raise VmemError(f"{where}: a password or token of {len(secret.strip())} characters is too easy to guess; use "
                        f"{MIN_SECRET_LENGTH} or more (spaces around it are not counted)")
    return secret


def hash_secret(secret: str, salt: Optional[bytes] = None) -> str:
    """A storable hash of a password or token: `scrypt$n$r$p$<salt hex>$<hash hex>`."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def _parse_hash(stored: str) -> tuple[dict, bytes, bytes]:
    """(scrypt parameters, salt, digest) of a stored hash; ValueError if it is not one `hash_secret` makes."""
    kind, n, r, p, salt, digest = stored.split("$")
    if kind != "scrypt":
        raise ValueError(f"unknown scheme {kind!r}")
    return {"n": int(n), "r": int(r), "p": int(p)}, bytes.fromhex(salt), bytes.fromhex(digest)


def _matches(secret: str, stored: str) -> bool:
    params, salt, digest = _parse_hash(stored)
    given = hashlib.scrypt(secret.encode(), salt=salt, maxmem=2**26, **params)
    return hmac.compare_digest(given, digest)


def is_loopback(address: str) -> bool:
    """Whether `address` serves this machine only ("localhost", 127.0.0.0/8, ::1)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


@dataclass
class AccessPolicy:
    read_only: bool = False
    hashes: dict[str, list[str]] = field(default_factory=dict)  # role -> stored hashes

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "AccessPolicy":
        """The policy the app runs under (see the module's docstring).

        Raises:
            VmemError: the auth file is missing, unreadable, or holds something other than roles and hashes.
        """
        hashes: dict[str, list[str]] = {role: [] for role in ROLES}
        if environ.get(AUTH_FILE_ENV):
            for role, stored in _read_auth_file(Path(environ[AUTH_FILE_ENV])).items():
                hashes[role].extend(stored)
        for role, name in PASSWORD_ENV.items():
            if environ.get(name):  # an empty variable is unset in effect: it grants nothing
                # the same minimum as --hash-password: a short one would open an app served to the network
                hashes[role].append(hash_secret(check_secret(environ[name], f"${name}")))
        return cls(read_only=environ.get(READ_ONLY_ENV, "") not in ("", "0"), hashes=hashes)

    @property
    def requires_sign_in(self) -> bool:
        return not self.read_only and any(self.hashes.values())

    def default_role(self) -> Optional[str]:
        """The role of a session before it signs in: viewer (read-only), none (sign-in required) or editor."""
        return "viewer" if self.read_only else None if self.requires_sign_in else "editor"

    def role_for(self, secret: str) -> Optional[str]:
        """The role a secret grants (editor over viewer), or None; every stored hash is tried."""
        granted = [role for role in ROLES for stored in self.hashes.get(role, []) if _matches(secret, stored)]
        return "editor" if "editor" in granted else granted[0] if granted else None


def may_upload(policy: AccessPolicy, signed_in_role: Optional[str]) -> bool:
    """Whether a session may send files to the app's upload endpoint: only a session with a role (the role it signed
    in with, else the policy's default: editor with no access policy, viewer when read-only), never one that has not
    signed in where sign-in is required. Anything that is not a role counts as not signed in."""
    role = signed_in_role if signed_in_role in ROLES else policy.default_role()
    return role in ROLES


def _read_auth_file(path: Path) -> dict[str, list[str]]:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VmemError(f"auth file {path}: unreadable ({exc}); expected JSON "
                        '{"editor": [HASH, ...], "viewer": [HASH, ...]} with hashes from `vmem app --hash-password`'
                        ) from None
    if not isinstance(content, dict) or not set(content) <= set(ROLES):
        keys = sorted(content) if isinstance(content, dict) else type(content).__name__
        raise VmemError(f"auth file {path}: holds {keys}; accepted: an object with the roles {', '.join(ROLES)}")
    for role, stored in content.items():
        if not isinstance(stored, list) or not all(isinstance(s, str) for s in stored):
            raise VmemError(f"auth file {path}: {role!r} must be a list of hashes")
        for number, item in enumerate(stored, 1):
            try:
                _parse_hash(item)
            except ValueError:  # not echoed: it may be a password someone stored by mistake
                raise VmemError(f"auth file {path}: entry {number} of {role!r} is not a hash made by "
                                "`vmem app --hash-password` (a password must never be stored in the file)") from None
    return content
class SignInThrottle:
    """Wrong secrets slow a client down: after FREE_TRIES failures in a row, each further try from that client waits
    twice as long as the last (1 s, 2 s, 4 s, ... up to MAX_WAIT), and every failure is logged with the client's
    address. A success clears the client's record. Keyed by client address (one per browser session where the
    address is unknown), kept in the server's memory: a restart forgets it, as it forgets sessions."""

    FREE_TRIES = 5
    MAX_WAIT = 300.0

    def __init__(self, clock=None) -> None:
        import threading
        import time

        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (failures in a row, time of the last)

    def wait(self, client: str) -> float:
        """Seconds `client` must still wait before its next try (0: it may try now)."""
        with self._lock:
            failures, last = self._failures.get(client, (0, 0.0))
        if failures < self.FREE_TRIES:
            return 0.0
        delay = min(self.MAX_WAIT, 2.0 ** (failures - self.FREE_TRIES))
        return max(0.0, last + delay - self._clock())

    def record(self, client: str, success: bool) -> None:
        import logging

        with self._lock:
            if success:
                self._failures.pop(client, None)
                return
            failures = self._failures.get(client, (0, 0.0))[0] + 1
            self._failures[client] = (failures, self._clock())
        logging.getLogger(__name__).warning("sign-in failed from %s (%d in a row)", client, failures)
