"""Who may do what: the sharing mode, roles, users, password hashes and the login lockout.

Two modes (``AUTOML_MODE`` in the environment, or ``mode`` under ``[automl]`` in
``.streamlit/secrets.toml``):

- ``local`` (the default): one person on their own machine, an admin with full rights.
- ``shared``: visitors are viewers; operators and admins log in, with a password whose
  argon2 hash is kept in the secrets, or through Streamlit's OpenID Connect login.

Roles rank viewer < operator < admin. The core's actions take the acting :class:`User` and
call :func:`check_allowed`, which raises :class:`~automl_core.errors.PermissionDenied` when
the role or ownership does not allow the action: hiding a widget is never the only guard.

Secrets layout::

    [automl]
    mode = "shared"

    [automl.users.alice]             # password login
    role = "operator"
    password_hash = "$argon2id$v=19$..."   # python -m automl_core hash-password

    [automl.oidc_roles]              # OpenID Connect login: e-mail -> role (others: viewer)
    "bob@example.org" = "admin"
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from automl_core import limits
from automl_core.errors import ConfigError, PermissionDenied
from automl_core.storage import store

MODES = ("local", "shared")
ROLES = ("viewer", "operator", "admin")
# what each action needs; "own" actions also need ownership unless the actor is an admin
ACTIONS: dict[str, tuple[str, bool]] = {
    "view": ("viewer", False),
    "export": ("viewer", False),
    "launch": ("operator", False),
    "upload": ("operator", False),
    "stop": ("operator", True),
    "view_log": ("operator", True),
    "resume": ("operator", True),
    # a note on a trial (any trial: notes are shared remarks, not a search's own)
    "annotate": ("operator", False),
    "delete": ("admin", False),
}
_ROOT = Path(__file__).resolve().parents[2]
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
# an e-mail address as an OpenID Connect provider gives it: a dot-atom local part of RFC
# 5322's characters (RFC 6531: any letter or digit, accents included) and a domain of labels
_EMAIL_ATOM = r"[\w!#$%&'*+/=?^`{|}~-]+"
_EMAIL = re.compile(rf"{_EMAIL_ATOM}(?:\.{_EMAIL_ATOM})*@[\w-]+(?:\.[\w-]+)+")
# what a folder name keeps of a user name as it is; anything else gets a hash (below)
_PLAIN_FOLDER = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


@dataclass(frozen=True)
class User:
    """The person acting.

    Attributes:
        name: Their user name (an e-mail address for an OpenID Connect login).
        role: ``viewer``, ``operator`` or ``admin``.
        source: How they are known: ``local`` (the local-mode user), ``password``,
            ``oidc`` or ``visitor`` (not logged in).
    """

    name: str
    role: str
    source: str = "password"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        if self.source == "oidc" and _is_email(self.name):
            return
        if not isinstance(self.name, str) or not _USER_NAME.fullmatch(self.name):
            raise ConfigError(
                f"invalid user name {self.name!r}: use 1-100 letters, digits, '.', '_', '@', "
                "'+' or '-', starting with a letter or digit"
            )

    def at_least(self, role: str) -> bool:
        """Whether this user's role is ``role`` or above."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _is_email(name: object) -> bool:
    """Whether a name is an e-mail address no longer than the ``max_email_length`` limit."""
    return (
        isinstance(name, str)
        and len(name) <= limits.get("max_email_length")
        and _EMAIL.fullmatch(name) is not None
        and ".." not in name
    )


LOCAL_ADMIN = User("local", "admin", "local")
VISITOR = User("visitor", "viewer", "visitor")


def secrets_path() -> Path:
    """The secrets file the core reads: ``AUTOML_SECRETS`` or ``.streamlit/secrets.toml``."""
    configured = os.environ.get("AUTOML_SECRETS")
    return Path(configured) if configured else _ROOT / ".streamlit" / "secrets.toml"


def read_config(secrets: Mapping | None = None) -> dict:
    """The ``[automl]`` table of the secrets (the given mapping, else the secrets file)."""
    if secrets is None:
        try:
            secrets = tomllib.loads(secrets_path().read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"the secrets file {secrets_path()} cannot be read ({exc})"
            ) from None
    table = secrets.get("automl", {}) if hasattr(secrets, "get") else {}
    return _plain(table) if isinstance(table, Mapping) else {}


def _plain(value):
    """A nested mapping (Streamlit's secrets are read-only AttrDicts) as plain dicts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def current_mode(secrets: Mapping | None = None) -> str:
    """``local`` or ``shared``: ``AUTOML_MODE`` if set, else the secrets' ``[automl] mode``.

    Raises:
        ConfigError: The mode is neither.
    """
    mode = os.environ.get("AUTOML_MODE") or read_config(secrets).get("mode") or "local"
    mode = str(mode).strip().lower()
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def resolve_actor(actor: User | None) -> User:
    """The acting user of a core call: the local admin by default in local mode.

    Raises:
        PermissionDenied: In shared mode without an explicit actor.
    """
    if actor is not None:
        if not isinstance(actor, User):
            raise PermissionDenied(f"the acting user must be an access.User, got {actor!r}")
        return actor
    if current_mode() == "shared":
        raise PermissionDenied("in shared mode every action needs the acting user (actor=...)")
    return LOCAL_ADMIN


def allowed(actor: User, action: str, owner: str | None = None) -> bool:
    """Whether ``actor`` may do ``action`` (on something owned by ``owner``)."""
    try:
        check_allowed(actor, action, owner)
    except PermissionDenied:
        return False
    return True


def check_allowed(actor: User, action: str, owner: str | None = None) -> User:
    """Checks an action against the actor's role and, for their own things, ownership.

    Args:
        actor: The acting user.
        action: A key of :data:`ACTIONS`.
        owner: The user name owning the target (a launched search), for ``stop``,
            ``view_log`` and ``resume``. Defaults to None (no owner known: admins only).

    Returns:
        The actor.

    Raises:
        PermissionDenied: The role or ownership does not allow it (the message says why).
        ConfigError: The action is unknown.
    """
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    needed, own = ACTIONS[action]
    if not actor.at_least(needed):
        raise PermissionDenied(
            f"{actor.name} ({actor.role}) may not {action.replace('_', ' ')}: "
            f"it needs the {needed} role"
            + ("; log in as an operator" if actor.source == "visitor" else "")
        )
    if own and not actor.at_least("admin") and owner != actor.name:
        whose = f"{owner}'s" if owner else "an unowned"
        raise PermissionDenied(
            f"{actor.name} ({actor.role}) may not {action.replace('_', ' ')} {whose} search: "
            "operators act on their own searches only"
        )
    return actor


def user_folder_name(user: User) -> str:
    """The folder name of a user's files (uploads), one per user name.

    A plain lower-case name (``alice``) is its own folder. Any other name is a readable,
    sanitised prefix, ``+`` and a hash of the exact name (``bob_example.org+1f2e...``): a
    plain name has no ``+``, so no two user names share a folder, also on a file system
    that ignores case (``bob@example.org`` and ``bob_example.org`` once did share one).
    Uploads saved under the older folder names (the name with unsafe characters replaced)
    stay where they are; such a user uploads them again to launch on them.

    Args:
        user: The user.

    Returns:
        A name of letters, digits, ``.``, ``_``, ``-`` and ``+``, starting with a letter or
        a digit.
    """
    if _PLAIN_FOLDER.fullmatch(user.name) and ".." not in user.name:
        return user.name
    prefix = re.sub(r"[^a-z0-9._-]", "_", user.name.lower())[:40]
    prefix = re.sub(r"\.{2,}", ".", prefix).strip("._-") or "user"
    digest = hashlib.sha256(user.name.encode("utf-8")).hexdigest()[:16]
    return f"{prefix}+{digest}"


# --- passwords ----------------------------------------------------------------------------


def _hasher():
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of a password, to paste into the secrets' ``password_hash``.

    Raises:
        ConfigError: The password is shorter than 8 characters.
    """
    if not isinstance(password, str) or len(password) < 8:
        raise ConfigError("a password must have at least 8 characters")
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether a password matches its argon2 hash (the library compares in constant time)."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return _hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, checked when the user name is unknown, so that both
    answers take the same time and a user name cannot be found by timing."""
    return _hasher().hash(os.urandom(16).hex())


def _failures_path() -> Path:
    return store.runs_home() / "access" / "login_failures.json"


# the table's layout: failures by typed user name, and by hashed client key (so a user name
# can never be mistaken for a client); a file of another layout is started afresh
_TABLE_VERSION = 2
# an attempt reserved but never settled (its process died while checking) frees its place
_ATTEMPT_SECONDS = 60.0


@contextlib.contextmanager
def _failures() -> Iterator[dict]:
    """The failed-login table, locked across threads, sessions and processes while open:
    ``{"users": {name: entry}, "clients": {hashed key: entry}}``."""
    path = _failures_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            try:
                table = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                table = {}
            if not isinstance(table, dict) or table.get("version") != _TABLE_VERSION:
                table = {"version": _TABLE_VERSION}
            for section in ("users", "clients"):
                if not isinstance(table.get(section), dict):
                    table[section] = {}
            yield table
            path.write_text(json.dumps(table), encoding="utf-8")
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _entry(section: dict, key: str, now: float, window: float) -> dict:
    """One name's failures: ``count`` in a row (restarted once the last is ``window`` old),
    ``until`` (end of its lockout), ``last`` (last failure) and ``pending`` (attempts being
    checked now, by token)."""
    raw = section.get(key)
    raw = raw if isinstance(raw, dict) else {}
    try:
        count, until, last = (float(raw.get(k, 0)) for k in ("count", "until", "last"))
        pending = {
            str(token): float(at)
            for token, at in dict(raw.get("pending") or {}).items()
            if float(at) > now - _ATTEMPT_SECONDS
        }
    except (TypeError, ValueError):
        count, until, last, pending = 0.0, 0.0, 0.0, {}
    if last <= now - window:
        count = 0
    return {"count": int(count), "until": until, "last": last, "pending": pending}


def _stale(entry: dict, now: float, window: float) -> bool:
    """Whether an entry is over: no lockout left, no recent failure, no attempt in flight."""
    return entry["until"] <= now and entry["last"] <= now - window and not entry["pending"]


def _client_key(client: str) -> str:
    """How a client is kept in the table: hashed, so no address is written down."""
    return hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def locked_for(username: str, now: float | None = None) -> float:
    """Seconds left of a user name's lockout (0 when it may try to log in)."""
    now = time.time() if now is None else now
    window = limits.get("login_lockout_seconds")
    with _failures() as table:
        entry = _entry(table["users"], username, now, window)
    return max(0.0, entry["until"] - now)


def _reserve(key: str, client: str | None, now: float) -> str:
    """Counts a login attempt as in flight for the user name (and the client) before its
    password is checked, all under the table's lock, so that parallel attempts can never
    check more passwords than the limits allow. Returns the attempt's token.

    Raises:
        PermissionDenied: The user name or the client is locked out, or as many attempts as
            the limit allows are already being checked.
    """
    window = limits.get("login_lockout_seconds")
    token = os.urandom(8).hex()
    refusal = None
    with _failures() as table:
        users, clients = table["users"], table["clients"]
        user = _entry(users, key, now, window)
        reserved = [(users, key, user)]
        if user["until"] > now:
            left = int(user["until"] - now) + 1
            refusal = f"too many failed logins for {key!r}: try again in {left} s"
        elif user["count"] + len(user["pending"]) >= limits.get("max_login_failures"):
            refusal = f"too many login attempts for {key!r} at once: try again in a few seconds"
        if client is not None and refusal is None:
            hashed = _client_key(client)
            entry = _entry(clients, hashed, now, window)
            reserved.append((clients, hashed, entry))
            if entry["until"] > now:
                left = int(entry["until"] - now) + 1
                refusal = f"too many failed logins from this client: try again in {left} s"
            elif entry["count"] + len(entry["pending"]) >= limits.get("max_client_login_failures"):
                refusal = "too many login attempts from this client at once: try again shortly"
        if refusal is None:
            for section, name, entry in reserved:
                entry["pending"][token] = now
                section[name] = entry
        # forget names whose last failure is older than a lockout: the file stays small
        # however many names are typed, and a recent count is never dropped
        for section in (users, clients):
            for name in list(section):
                if _stale(_entry(section, name, now, window), now, window):
                    section.pop(name)
    if refusal is not None:
        raise PermissionDenied(refusal)
    return token


def _settle(key: str, client: str | None, token: str, ok: bool, now: float) -> None:
    """Records a checked attempt: a right password clears the counts in a row, a wrong one
    adds to them and starts a lockout at the limit. A lockout is only ever extended."""
    window = limits.get("login_lockout_seconds")
    with _failures() as table:
        targets = [(table["users"], key, limits.get("max_login_failures"))]
        if client is not None:
            limit = limits.get("max_client_login_failures")
            targets.append((table["clients"], _client_key(client), limit))
        for section, name, limit in targets:
            entry = _entry(section, name, now, window)
            entry["pending"].pop(token, None)
            if ok:
                entry["count"] = 0
            else:
                entry["count"] += 1
                entry["last"] = now
                if entry["count"] >= limit:
                    entry["until"] = max(entry["until"], now + window)
                    entry["count"] = 0
            if _stale(entry, now, window) and not entry["count"]:
                section.pop(name, None)
            else:
                section[name] = entry


def authenticate(
    username: str,
    password: str,
    secrets: Mapping | None = None,
    now: float | None = None,
    client: str | None = None,
) -> User:
    """Logs a user in with a password kept as an argon2 hash in the secrets.

    After ``max_login_failures`` wrong passwords in a row a user name is locked for
    ``login_lockout_seconds``; a right password during the lockout is refused too. Each
    attempt is counted before its password is checked, so parallel attempts check no more
    passwords than the limit. With ``client``, one client (a browser's address or session)
    has its own, lower limit, ``max_client_login_failures``: a client over it is refused
    without its attempt counting against the user name, so one visitor cannot lock a user
    out for everyone.

    Args:
        username: The user name typed.
        password: The password typed.
        secrets: The secrets mapping. Defaults to the secrets file.
        now: The current time (tests). Defaults to ``time.time()``.
        client: What identifies the client asking (kept only as a hash). Defaults to None
            (no per-client limit, as on the command line).

    Returns:
        The user, with the role the secrets give.

    Raises:
        PermissionDenied: Unknown user, wrong password, or locked (one message for the first
            two, so a user name cannot be guessed from it).
    """
    now = time.time() if now is None else now
    username = (username or "").strip()
    users = read_config(secrets).get("users", {}) or {}
    entry = users.get(username) if isinstance(users, dict) else None
    key = username[:100] or "-"
    token = _reserve(key, client, now)
    ok = False
    try:
        stored = entry.get("password_hash") if isinstance(entry, dict) else None
        ok = verify_password(stored or _dummy_hash(), password or "") and stored is not None
    finally:
        _settle(key, client, token, ok, now)
    if not ok:
        raise PermissionDenied("wrong user name or password")
    role = entry.get("role", "operator")
    return User(username, role, "password")


def oidc_user(email: str | None, secrets: Mapping | None = None) -> User:
    """The user an OpenID Connect login is: their e-mail address, in lower case, with the role
    ``[automl.oidc_roles]`` gives it (its keys compared in lower case too; viewer when it is
    not listed).

    Args:
        email: The address the provider gives (``st.user.email``); None or empty for no login.
        secrets: The secrets mapping. Defaults to the secrets file.

    Returns:
        The user; :data:`VISITOR` without an address.

    Raises:
        ConfigError: The address is longer than the ``max_email_length`` limit, or is not an
            e-mail address (the message says which, to show with a Log out button).
    """
    if not email or not str(email).strip():
        return VISITOR
    email = str(email).strip().lower()
    limit = limits.get("max_email_length")
    if len(email) > limit:
        raise ConfigError(
            f"the e-mail address of this login is {len(email)} characters long, more than the "
            f"{limit} accepted ({limits.LIMITS['max_email_length'].env}); log out and use "
            "another account"
        )
    if not _is_email(email):
        shown = email if len(email) <= 60 else email[:57] + "..."
        raise ConfigError(
            f"the login's {shown!r} is not an e-mail address; expected name@domain "
            "(log out and use another account)"
        )
    roles = read_config(secrets).get("oidc_roles", {}) or {}
    roles = (
        {str(k).strip().lower(): v for k, v in roles.items()} if isinstance(roles, dict) else {}
    )
    role = roles.get(email, "viewer")
    return User(email, role if role in ROLES else "viewer", "oidc")
