"""Refuse file uploads from sessions that may not upload (vmem_core.access.may_upload).

Streamlit accepts a PUT to `/_stcore/upload_file/<session>/<file>` from any live session, signed in or not, and keeps
the file in server memory. Streamlit 1.67's upload route (web/server/starlette/starlette_routes.py) asks
`Runtime.is_active_session` before it reads the body, and stores the file with `uploaded_file_mgr.add_file`; both are
wrapped here, once per server runtime, to answer 403 for a session without an allowed role (before the body is read,
and again before anything is kept). A session whose role cannot be looked up counts as not signed in (fail closed)."""

from __future__ import annotations

import threading
from typing import Any, Optional

from ..access import AccessPolicy, may_upload

ROLE_KEY = "_vmem_role"  # where vmem_core.ui.access keeps a signed-in session's role

_lock = threading.Lock()


def session_role_of(runtime: Any, session_id: str) -> Optional[str]:
    """The role a session signed in with, or None (not signed in, no such session, or not readable)."""
    try:
        session = runtime.get_app_session(session_id)
        state = session.session_state if session is not None else None
        if state is not None and ROLE_KEY in state:
            role = state[ROLE_KEY]
            return role if isinstance(role, str) else None
    except Exception:  # noqa: BLE001 - fail closed: an unreadable session has no role
        return None
    return None


def _refuse() -> None:
    from starlette.exceptions import HTTPException

    raise HTTPException(status_code=403, detail="Sign in to upload files.")


def install_upload_guard(policy: AccessPolicy) -> None:
    """Guard the running server's upload endpoint with `policy` (idempotent; a no-op outside a Streamlit server)."""
    try:
        from streamlit.runtime import Runtime
    except ImportError:  # pragma: no cover - streamlit is a dependency of the app
        return
    with _lock:
        if not Runtime.exists():
            return
        runtime = Runtime.instance()
        if getattr(runtime.is_active_session, "vmem_upload_guard", None) is True:
            return  # this server's runtime is guarded already
        def allowed(session_id: str) -> bool:
            return may_upload(policy, session_role_of(runtime, session_id))

        active = runtime.is_active_session

        def is_active_session(session_id: str) -> bool:  # only the upload route asks this (streamlit 1.67)
            if not active(session_id):
                return False
            if not allowed(session_id):
                _refuse()
            return True

        is_active_session.vmem_upload_guard = True  # type: ignore[attr-defined]
        runtime.is_active_session = is_active_session
        manager = runtime.uploaded_file_mgr
        add_file = manager.add_file

        def guarded_add_file(session_id: str, file: Any) -> None:
            if not allowed(session_id):
                _refuse()
            add_file(session_id=session_id, file=file)

        manager.add_file = guarded_add_file
