"""Who may do what in the app: the access policy of the environment `vmem app` runs in, the sign-in form and its
per-client throttle, and this session's role (vmem_core.access)."""

from __future__ import annotations

import os

import streamlit as st

from ..access import ACCESS_ENV, AccessPolicy, SignInThrottle
from ..errors import VmemError
from .upload_guard import install_upload_guard


def _access_policy() -> AccessPolicy:
    """The policy of the environment the app runs in, built once per distinct setting (`vmem app` sets them)."""
    try:
        return _policy_for(tuple(os.environ.get(name, "") for name in ACCESS_ENV))
    except VmemError as exc:  # a broken auth file: nobody gets in
        st.error(str(exc))
        st.stop()


@st.cache_resource(show_spinner=False)
def _policy_for(settings: tuple) -> AccessPolicy:
    return AccessPolicy.from_environment()  # passwords in the environment are hashed once, here


def session_role() -> str:
    """This session's role (vmem_core.access): viewer or editor. Where a sign-in is required and the session has not
    signed in, shows the sign-in form and stops the page."""
    policy = _access_policy()
    install_upload_guard(policy)  # once per server process: refuses uploads from sessions with no role
    role = st.session_state.get("_vmem_role") or policy.default_role()  # not a widget key: no client can set it
    if role:
        return role
    st.title("Sign in")
    st.caption("This app is shared: its owner gives viewers and editors a password or token each.")
    with st.form("sign-in"):
        secret = st.text_input("Password or token", type="password", key="sign-in-secret")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        client = _client_address()
        wait = _sign_in_throttle().wait(client)
        if wait > 0:  # checked before the secret is: a guesser learns nothing while it waits
            st.error(f"Too many wrong passwords from this client: try again in {wait:.0f} s.")
            st.stop()
        role = policy.role_for(secret)
        _sign_in_throttle().record(client, success=bool(role))
        if role:
            st.session_state["_vmem_role"] = role
            st.rerun()
        st.error("That password or token opens no role here.")
    st.stop()


@st.cache_resource(show_spinner=False)
def _sign_in_throttle() -> SignInThrottle:
    return SignInThrottle()  # one per server: shared by every session, so a new tab does not reset it


def _client_address() -> str:
    """Who is signing in, for the throttle: the client's address, or this browser session where it is unknown."""
    address = getattr(st.context, "ip_address", None)
    if isinstance(address, str) and address:  # None behind some proxies (and not a string in Streamlit's AppTest)
        return address
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return f"session {ctx.session_id}" if ctx is not None else "unknown"


def can_edit() -> bool:
    """Whether this session may change the memory (show edit controls only then)."""
    return session_role() == "editor"
