"""Who may use the registry's pages and API: staff accounts and integration tokens.

Both live in the registry's file (tables `users` and `api_tokens`, schema 4
of `gated.registry.store`). Rules kept here:

- Roles, each allowing what the one before does: `viewer` reads (attendees,
  the dashboard, the exports), `desk` also changes attendees (walk-ins,
  badges and reprints, revoke, category, benefits, API batches), `admin`
  also manages accounts and tokens.
- A password is kept only as its argon2id hash (argon2-cffi, its default
  parameters: some 50 ms and 64 MiB a try), never logged.
- The seed's rule: three wrong passwords in a row lock the account for 15
  minutes. While locked, even the right password is refused (and not
  checked, so a lock costs the attacker, not the CPU); once the time has
  passed the count starts again. A right password clears the count.
- An unknown name costs the same hash as a known one, so the time a refusal
  takes does not tell which names exist.
- An admin may unlock an account (its count cleared) or disable it: a
  disabled account keeps its hash behind a leading "!" (the shadow file's
  convention: no argon2 hash starts with it), so it signs in again only once
  enabled, with the same password.
- The time is an argument (`now`, unix seconds): the caller owns the clock.
- An API token is 32 random bytes shown once when made; the registry keeps
  its SHA-256 only (a token is not guessable, so a fast hash is enough, and
  every API call can check it without argon2's cost).
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gated.errors import RegistryError

if TYPE_CHECKING:
    from gated.registry.store import RegistryStore

ROLES = ("viewer", "desk", "admin")
MAX_FAILURES = 3
LOCK_S = 15 * 60.0
PASSWORD_MIN, PASSWORD_MAX = 8, 256
TOKEN_PREFIX = "gtd_"
DISABLED = "!"  # prefix of a disabled account's hash
_NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("an account that does not exist")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a signed-in staff member (kind "user") or an integration's token ("token")."""

    name: str
    role: str
    kind: str = "user"

    def may(self, role: str) -> bool:
        """True when this principal's role includes `role` (admin > desk > viewer)."""
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def actor(self) -> str:
        """How the changes table records this principal: "user:anna", "token:crm"."""
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Account:
    """One staff account as the accounts page lists it (never its hash)."""

    name: str
    role: str
    locked_until: float  # unix seconds; 0 or past: not locked
    disabled: bool


@dataclass(frozen=True, slots=True)
class SignInResult:
    principal: Principal | None
    #: None when signed in; otherwise the one line to show (wrong password, locked until...).
    refusal: str | None = None
    locked_until: float | None = None


def role_problem(role: str) -> str | None:
    return None if role in ROLES else f"{role!r} is not a role (roles: {', '.join(ROLES)})"


def name_problem(name: str) -> str | None:
    return None if _NAME_RE.fullmatch(name) else f"{name!r}: a name is 1 to 64 characters from A-Z a-z 0-9 _ . @ -"


def password_problem(password: str) -> str | None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters"
    if password != password.strip() or not password.isprintable():
        return "a password is printable characters without leading or trailing spaces"
    return None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class Accounts:
    """The accounts and tokens of one registry file, on one store connection (one thread at a time)."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store
        self.conn = store.conn

    # ------------------------------------------------------------- users

    def add_user(self, username: str, role: str, password: str) -> None:
        for problem in (name_problem(username), role_problem(role), password_problem(password)):
            if problem:
                raise RegistryError(problem)
        digest = _hasher.hash(password)
        with self.store.transaction():
            if self.conn.execute("SELECT 1 FROM users WHERE username = ?", (username,)).fetchone():
                raise RegistryError(f"user {username!r} exists already")
            self.conn.execute("INSERT INTO users(username, role, hash) VALUES (?, ?, ?)", (username, role, digest))

    def set_password(self, username: str, password: str) -> None:
        problem = password_problem(password)
        if problem:
            raise RegistryError(problem)
        digest = _hasher.hash(password)
        with self.store.transaction():  # a disabled account stays disabled with its new password
            if not self.conn.execute("UPDATE users SET hash = CASE WHEN substr(hash, 1, 1) = ? THEN ? ELSE ? END, "
                                     "failed = 0, locked_until = 0 WHERE username = ?",
                                     (DISABLED, DISABLED + digest, digest, username)).rowcount:
                raise RegistryError(f"no user {username!r}")

    def users(self) -> list[tuple[str, str, float]]:
        """(username, role, locked_until) of every account, by name."""
        return self.conn.execute("SELECT username, role, locked_until FROM users ORDER BY username").fetchall()

    def accounts(self) -> list[Account]:
        """Every account, by name, with its lock and whether it is disabled."""
        return [Account(name, role, locked_until, digest.startswith(DISABLED)) for name, role, locked_until, digest in
                self.conn.execute("SELECT username, role, locked_until, hash FROM users ORDER BY username")]

    def unlock(self, username: str) -> None:
        """Clear the wrong-password count and any lock (the password stays)."""
        with self.store.transaction():
            if not self.conn.execute("UPDATE users SET failed = 0, locked_until = 0 WHERE username = ?", (username,)).rowcount:
                raise RegistryError(f"no user {username!r}")

    def set_disabled(self, username: str, disabled: bool) -> None:
        """Disable an account (no sign-in at all) or enable it again with its password."""
        with self.store.transaction():
            row = self.conn.execute("SELECT hash FROM users WHERE username = ?", (username,)).fetchone()
            if row is None:
                raise RegistryError(f"no user {username!r}")
            digest = row[0].removeprefix(DISABLED)
            self.conn.execute("UPDATE users SET hash = ?, failed = 0, locked_until = 0 WHERE username = ?",
                              (DISABLED + digest if disabled else digest, username))

    def admins(self) -> int:
        """How many enabled admin accounts there are (the last one is not disabled from a page)."""
        return self.conn.execute("SELECT count(*) FROM users WHERE role = 'admin' AND substr(hash, 1, 1) <> ?",
                                 (DISABLED,)).fetchone()[0]

    def verify(self, username: str, password: str, now: float) -> SignInResult:
        """Check a sign-in at time `now`, counting failures and locking as the rules above say."""
        row = self.conn.execute("SELECT role, hash, failed, locked_until FROM users WHERE username = ?",
                                (username,)).fetchone() if len(username) <= 64 else None
        if row is None:
            _check(_dummy_hash(), password)
            return SignInResult(None, "Wrong name or password.")
        role, digest, failed, locked_until = row
        if digest.startswith(DISABLED):
            _check(_dummy_hash(), password)
            return SignInResult(None, "This account is disabled: ask an admin.")
        if now < locked_until:
            return SignInResult(None, f"This account is locked after {MAX_FAILURES} wrong passwords, until "
                                      f"{_clock(locked_until)}: try again in {_minutes(locked_until - now)} "
                                      "or ask an admin to unlock it.", locked_until)
        if locked_until:
            failed = 0  # the lock has passed: a fresh count
        if not _check(digest, password):
            failed += 1
            until = now + LOCK_S if failed >= MAX_FAILURES else 0.0
            with self.store.transaction():
                self.conn.execute("UPDATE users SET failed = ?, locked_until = ? WHERE username = ?",
                                  (0 if until else failed, until, username))
            if until:
                return SignInResult(None, f"Wrong password ({MAX_FAILURES} in a row): the account is locked for "
                                          f"{int(LOCK_S // 60)} minutes, until {_clock(until)}.", until)
            return SignInResult(None, "Wrong name or password.")
        if failed or locked_until:
            with self.store.transaction():
                self.conn.execute("UPDATE users SET failed = 0, locked_until = 0 WHERE username = ?", (username,))
        return SignInResult(Principal(username, role))

    # ------------------------------------------------------------ tokens

    def add_token(self, name: str, role: str, now: float) -> str:
        """Make a token for an integration; returns it (the only time it is seen)."""
        for problem in (name_problem(name), role_problem(role)):
            if problem:
                raise RegistryError(problem)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.store.transaction():
            if self.conn.execute("SELECT 1 FROM api_tokens WHERE name = ?", (name,)).fetchone():
                raise RegistryError(f"a token named {name!r} exists already (revoke it first)")
            self.conn.execute("INSERT INTO api_tokens(digest, name, role, created_at) VALUES (?, ?, ?, ?)",
                              (token_digest(token), name, role, now))
        return token

    def revoke_token(self, name: str) -> None:
        with self.store.transaction():
            if not self.conn.execute("DELETE FROM api_tokens WHERE name = ?", (name,)).rowcount:
                raise RegistryError(f"no token named {name!r}")

    def tokens(self) -> list[tuple[str, str, float]]:
        """(name, role, created_at) of every token, by name."""
        return self.conn.execute("SELECT name, role, created_at FROM api_tokens ORDER BY name").fetchall()

    def integration(self, name: str) -> Principal | None:
        """The integration `name` (its token's role), authenticated another way (a client certificate)."""
        row = self.conn.execute("SELECT name, role FROM api_tokens WHERE name = ?", (name,)).fetchone()
        return None if row is None else Principal(row[0], row[1], "cert")

    def token_principal(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        row = self.conn.execute("SELECT name, role FROM api_tokens WHERE digest = ?", (token_digest(token),)).fetchone()
        return None if row is None else Principal(row[0], row[1], "token")


def _check(digest: str, password: str) -> bool:
    if len(password) > PASSWORD_MAX:
        return False
    try:
        return _hasher.verify(digest, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _clock(at: float) -> str:
    """The time of day a lock ends, in the registry's local time ("10:42:05")."""
    return time.strftime("%H:%M:%S", time.localtime(at))


def _minutes(seconds: float) -> str:
    minutes = max(1, int(-(-seconds // 60)))
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
