"""Who is using the dashboard: the mode, the login form, and the acting user of each call.

Pages pass :func:`current_user` to every core action (launch, stop, upload, delete, the
live log); the core checks the role and ownership itself, so a hidden or forced widget
changes nothing. In ``local`` mode the user is the local admin and no login is shown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import streamlit as st

from automl_core.errors import AutoMLError
from automl_core.hosting import access

USER_KEY = "_access_user"


def secrets() -> Mapping:
    """Streamlit's secrets, or an empty mapping when there is no secrets file."""
    try:
        return {key: st.secrets[key] for key in st.secrets}
    except Exception:  # no secrets.toml: Streamlit raises its own not-found error
        return {}


def mode() -> str:
    """``local`` or ``shared`` (``AUTOML_MODE`` or ``[automl] mode`` in the secrets)."""
    return access.current_mode(secrets())


def oidc_configured() -> bool:
    """Whether an OpenID Connect provider is configured (an ``[auth]`` table in secrets)."""
    return "auth" in secrets()


def current_user() -> access.User:
    """The acting user of this browser session.

    Local mode: the local admin. Shared mode: the password login of this session, else the
    OpenID Connect user (``st.user``) where a provider is configured, else a visitor.
    """
    if mode() == "local":
        return access.LOCAL_ADMIN
    user = st.session_state.get(USER_KEY)
    if isinstance(user, access.User):
        return user
    logged_in = oidc_configured() and getattr(st.user, "is_logged_in", False)
    if logged_in and _oidc_refusal() is None:
        return access.oidc_user(st.user.get("email"), secrets())
    return access.VISITOR


def _oidc_refusal() -> str | None:
    """Why this session's OpenID Connect login is refused (an address too long or not an
    e-mail address), or None: the page then shows it with a Log out button."""
    if not oidc_configured() or not getattr(st.user, "is_logged_in", False):
        return None
    try:
        access.oidc_user(st.user.get("email"), secrets())
    except AutoMLError as exc:
        return str(exc)
    return None


def _client() -> str:
    """Who is asking, for the per-client login limit: the address the nearest proxy saw
    (the last ``X-Forwarded-For`` entry), else the connection's address, else this session."""
    forwarded = (st.context.headers.get("X-Forwarded-For") or "").split(",")[-1].strip()
    if forwarded:
        return f"forwarded:{forwarded}"
    address = st.context.ip_address
    if isinstance(address, str) and address:  # None on localhost (and not a str in AppTest)
        return f"address:{address}"
    return f"session:{st.session_state.setdefault('_client_session', os.urandom(16).hex())}"


def _password_login() -> None:
    """The Log in button's callback: checks the typed password with the core (lockout
    included), keeps the user, and clears the password from the session."""
    name = st.session_state.get("login_name", "")
    password = st.session_state.get("login_password", "")
    try:
        st.session_state[USER_KEY] = access.authenticate(
            name, password, secrets(), client=_client()
        )
    except AutoMLError as exc:
        st.session_state["_login_error"] = str(exc)
    st.session_state["login_password"] = ""


def _logout() -> None:
    """The Log out button's callback."""
    st.session_state.pop(USER_KEY, None)


def login_ui() -> access.User:
    """The sidebar's login block in shared mode (nothing in local mode); returns the user."""
    user = current_user()
    if mode() == "local":
        return user
    box = st.sidebar.container(border=True)
    refusal = _oidc_refusal()
    if refusal is not None:
        box.error(refusal)
        if box.button("Log out", key="logout"):
            st.logout()
        return user
    if user.source == access.VISITOR.source:
        box.caption("Viewing as a visitor: explore and download. Log in to run searches.")
        box.text_input("User name", key="login_name")
        box.text_input("Password", type="password", key="login_password")
        box.button("Log in", key="login", on_click=_password_login)
        error = st.session_state.pop("_login_error", None)
        if error:
            box.error(error)
        if oidc_configured() and box.button("Log in with your provider", key="login_oidc"):
            st.login()
        return user
    box.caption(f"Signed in as **{user.name}** ({user.role})")
    if box.button("Log out", key="logout", on_click=_logout) and user.source == "oidc":
        st.logout()
    return user
