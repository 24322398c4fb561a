"""Sign-in, roles and the access log of the executive view (plain logic, no Streamlit).

Who may sign in comes from Streamlit secrets or the environment, never from code::

    # .streamlit/secrets.toml (git-ignored)
    [pulso]
    password = "..."                 # shared viewer password (or env PULSO_APP_PASSWORD)
    [pulso.users.ana]                # a named account, optionally with roles
    password = "..."
    roles = ["clinical"]
    [pulso.roles]                    # roles of OIDC (st.login) users, by e-mail
    "ana@example.com" = ["clinical"]

Passwords are compared in constant time (``hmac.compare_digest``). Only users with the ``clinical``
role see the detail of sensitive niches (catalog ``sensitive: true``), and every such view is appended
to the access log (``$PULSO_APP_ACCESS_LOG`` or ``data/app_access.log``) with the user name only.
"""

from __future__ import annotations

import fcntl
import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CLINICAL_ROLE = "clinical"
PASSWORD_ENV = "PULSO_APP_PASSWORD"
ACCESS_LOG_ENV = "PULSO_APP_ACCESS_LOG"
DEFAULT_ACCESS_LOG = Path("data/app_access.log")
# A user name is shown on the page and written to the access log: keep it to a safe, short alphabet.
_USER_NAME = re.compile(r"^[\w.@+-]{1,64}$")


class AccessConfigError(ValueError):
    """The access configuration in secrets is malformed (the message never contains a secret)."""


@dataclass(frozen=True)
class Account:
    password: str = field(repr=False)
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessConfig:
    """Who may sign in; built by :func:`load_access_config`. Its repr never shows a password."""

    shared_password: str | None = field(default=None, repr=False)
    accounts: dict[str, Account] = field(default_factory=dict, repr=False)
    oidc_roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    oidc_enabled: bool = False

    @property
    def configured(self) -> bool:
        return bool(self.shared_password or self.accounts or self.oidc_enabled)


@dataclass(frozen=True)
class Identity:
    """A signed-in user: a name (no other personal data) and roles."""

    name: str
    roles: tuple[str, ...] = ()

    @property
    def clinical(self) -> bool:
        return CLINICAL_ROLE in self.roles


def _roles(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise AccessConfigError(f"secrets {where}: roles must be a list of strings")


def load_access_config(secrets: Mapping[str, Any], environ: Mapping[str, str]) -> AccessConfig:
    """Read the access configuration from Streamlit secrets (a mapping) and the environment."""
    section = secrets.get("pulso", {}) or {}
    if not isinstance(section, Mapping):
        raise AccessConfigError("secrets [pulso] must be a table")
    shared = environ.get(PASSWORD_ENV) or section.get("password") or None
    if shared is not None and not isinstance(shared, str):
        raise AccessConfigError("secrets [pulso] password must be a string")
    for table in ("users", "roles"):
        if not isinstance(section.get(table) or {}, Mapping):
            raise AccessConfigError(f"secrets [pulso] {table} must be a table ([pulso.{table}])")
    accounts: dict[str, Account] = {}
    for name, entry in (section.get("users") or {}).items():
        if not _USER_NAME.match(str(name)):
            raise AccessConfigError(
                f"secrets [pulso.users]: user name {name!r} has characters outside [A-Za-z0-9_.@+-]"
            )
        if not isinstance(entry, Mapping) or not isinstance(entry.get("password"), str) or not entry["password"]:
            raise AccessConfigError(f"secrets [pulso.users.{name}]: needs a non-empty password string")
        accounts[str(name)] = Account(entry["password"], _roles(entry.get("roles"), f"[pulso.users.{name}]"))
    oidc_roles = {str(k): _roles(v, f"[pulso.roles] {k!r}") for k, v in (section.get("roles") or {}).items()}
    auth = secrets.get("auth") or {}
    oidc = isinstance(auth, Mapping) and bool(auth.get("redirect_uri") and auth.get("cookie_secret"))
    return AccessConfig(shared, accounts, oidc_roles, oidc)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def check_password(config: AccessConfig, user: str, password: str) -> Identity | None:
    """The identity for a correct user/password, else None. Constant time in the password.

    A named account must use its own password; any other valid user name may use the shared password
    (with no roles). Unknown names still pay one comparison so timing does not reveal which exist.
    """
    user = (user or "").strip()
    if not _USER_NAME.match(user) or not password:
        return None
    account = config.accounts.get(user)
    if account is not None:
        return Identity(user, account.roles) if _same(password, account.password) else None
    if config.shared_password and _same(password, config.shared_password):
        return Identity(user, ())
    _same(password, "\0" * max(len(password), 1))
    return None


def oidc_identity(config: AccessConfig, user_info: Mapping[str, Any]) -> Identity | None:
    """The identity of an OIDC (``st.login``) user, roles looked up by e-mail; None when signed out."""
    if not user_info.get("is_logged_in"):
        return None
    name = str(user_info.get("email") or user_info.get("name") or user_info.get("sub") or "")
    if not _USER_NAME.match(name):
        return None
    return Identity(name, config.oidc_roles.get(name, ()))


def access_log_path(environ: Mapping[str, str]) -> Path:
    """Where sensitive views are recorded: ``$PULSO_APP_ACCESS_LOG`` or ``data/app_access.log``."""
    return Path(environ.get(ACCESS_LOG_ENV) or DEFAULT_ACCESS_LOG)


def log_sensitive_view(
    path: Path, identity: Identity, page: str, niches: list[str], at: datetime | None = None
) -> dict[str, Any]:
    """Append one JSON line: who (user name only) saw which sensitive niche's detail on which page, when."""
    record = {
        "at": (at or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds"),
        "user": identity.name,
        "page": page,
        "niches": sorted(niches),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # several app processes may append at once
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
        fcntl.flock(fh, fcntl.LOCK_UN)
    return record
