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
import json
import os
import re
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from automl_core import limits, store
from automl_core.errors import ConfigError, PermissionDenied

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
    "delete": ("admin", False),
}
_ROOT = Path(__file__).resolve().parent.parent
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")


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
        if not isinstance(self.name, str) or not _USER_NAME.fullmatch(self.name):
            raise ConfigError(
                f"invalid user name {self.name!r}: use 1-100 letters, digits, '.', '_', '@', "
                "'+' or '-', starting with a letter or digit"
            )

    def at_least(self, role: str) -> bool:
        """Whether this user's role is ``role`` or above."""
        return ROLES.index(self.role) >= ROLES.index(role)


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
    """A folder name for a user's files (uploads): their name with unsafe characters replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", user.name).lstrip(".") or "user"


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


@contextlib.contextmanager
def _failures() -> Iterator[dict]:
    """The failed-login counts by user name, locked across sessions and processes."""
    path = _failures_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            try:
                table = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                table = {}
            table = table if isinstance(table, dict) else {}
            yield table
            path.write_text(json.dumps(table), encoding="utf-8")
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stale(entry: dict, now: float, window: float) -> bool:
    """Whether a failure entry is over: no lockout left and no failure within ``window``."""
    return float(entry.get("until", 0)) < now and float(entry.get("last", 0)) < now - window


def locked_for(username: str, now: float | None = None) -> float:
    """Seconds left of a user name's lockout (0 when it may try to log in)."""
    now = time.time() if now is None else now
    with _failures() as table:
        entry = table.get(username) or {}
    return max(0.0, float(entry.get("until", 0.0)) - now)


def authenticate(
    username: str, password: str, secrets: Mapping | None = None, now: float | None = None
) -> User:
    """Logs a user in with a password kept as an argon2 hash in the secrets.

    After ``max_login_failures`` wrong passwords in a row a user name is locked for
    ``login_lockout_seconds``; a right password during the lockout is refused too.

    Args:
        username: The user name typed.
        password: The password typed.
        secrets: The secrets mapping. Defaults to the secrets file.
        now: The current time (tests). Defaults to ``time.time()``.

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
    left = locked_for(key, now)
    if left > 0:
        raise PermissionDenied(
            f"too many failed logins for {key!r}: try again in {int(left) + 1} s"
        )
    stored = entry.get("password_hash") if isinstance(entry, dict) else None
    ok = verify_password(stored or _dummy_hash(), password or "") and stored is not None
    role = entry.get("role", "operator") if isinstance(entry, dict) else "viewer"
    with _failures() as table:
        if ok:
            table.pop(key, None)
        else:
            count = int((table.get(key) or {}).get("count", 0)) + 1
            until = 0.0
            if count >= limits.get("max_login_failures"):
                until, count = now + limits.get("login_lockout_seconds"), 0
            table[key] = {"count": count, "until": until, "last": now}
            # forget names whose last failure is older than a lockout: the file stays small
            # however many names are typed, and a recent count is never dropped
            window = limits.get("login_lockout_seconds")
            for name in [n for n, e in table.items() if _stale(e, now, window)]:
                table.pop(name)
    if not ok:
        raise PermissionDenied("wrong user name or password")
    return User(username, role, "password")


def oidc_user(email: str | None, secrets: Mapping | None = None) -> User:
    """The user an OpenID Connect login is: their e-mail, with the role ``[automl.oidc_roles]``
    gives it (viewer when it is not listed)."""
    if not email:
        return VISITOR
    roles = read_config(secrets).get("oidc_roles", {}) or {}
    role = roles.get(email, "viewer") if isinstance(roles, dict) else "viewer"
    return User(email, role if role in ROLES else "viewer", "oidc")
