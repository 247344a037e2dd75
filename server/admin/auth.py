"""Who is signed in to the dashboard: argon2 password hashes, the signed session cookie, CSRF
tokens and the limit on failed sign-ins (docs/security.md#the-dashboards-sign-in)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadData, URLSafeTimedSerializer

from server.models import utcnow

if TYPE_CHECKING:
    from server.store import Store

SESSION_COOKIE = "vitrine_admin"
LOGIN_CSRF_COOKIE = "vitrine_admin_csrf"
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is only a way to burn CPU
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")

# argon2id with the library's defaults (RFC 9106's second recommended setting: 64 MiB,
# 3 passes): about 50 ms per check, which is what a sign-in may cost and a guesser may not.
_hasher = PasswordHasher()
# Checked when the email names nobody, so that an unknown user takes as long as a wrong
# password and the answer's timing says nothing about who has an account.
_NOBODY = _hasher.hash(secrets.token_urlsafe(24))


def normal_email(email: str) -> str:
    """The email as stored (trimmed, lowercased); ValueError when it is not one."""
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise ValueError(f"{email!r} is not an email address")
    return email


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def password_matches(stored_hash: str | None, password: str) -> bool:
    """Whether `password` is the one hashed; with no hash (no such user) a check as long, and False."""
    if len(password) > MAX_PASSWORD_LENGTH:
        password = ""
    try:
        return _hasher.verify(stored_hash or _NOBODY, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def same(a: str, b: str) -> bool:
    """Equal strings, compared in constant time."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Session:
    email: str
    password: str  # a digest of the password hash: a new password ends the sessions made with the old
    csrf: str  # the token every form of this session carries


class Sessions:
    """Session cookies and the sign-in form's CSRF cookie, signed with the server's secret
    keys (newest signs, any checks: keys rotate without signing everyone out)."""

    def __init__(self, keys: list[str], max_age_s: int) -> None:
        self.max_age_s = max_age_s
        self._sessions = URLSafeTimedSerializer(keys, salt="vitrine.admin.session")
        self._login = URLSafeTimedSerializer(keys, salt="vitrine.admin.login")

    def start(self, email: str, password_hash: str) -> tuple[str, Session]:
        session = Session(email, password_digest(password_hash), secrets.token_urlsafe(24))
        return self._sessions.dumps({"e": session.email, "p": session.password, "c": session.csrf}), session

    def read(self, cookie: str | None) -> Session | None:
        """The session in a valid cookie; None when missing, tampered with or expired."""
        if not cookie or len(cookie) > 1024:
            return None
        try:
            data: Any = self._sessions.loads(cookie, max_age=self.max_age_s)
            return Session(str(data["e"]), str(data["p"]), str(data["c"]))
        except (BadData, KeyError, TypeError):
            return None

    def login_token(self) -> tuple[str, str]:
        """(cookie, form field) for the sign-in form: the form's token must match the cookie's
        (double submit), which a page on another site can neither read nor set."""
        token = secrets.token_urlsafe(24)
        return self._login.dumps(token), token

    def login_token_matches(self, cookie: str | None, field: str) -> bool:
        if not cookie or not field or len(cookie) > 512:
            return False
        try:
            token = self._login.loads(cookie, max_age=3600)
        except BadData:
            return False
        return isinstance(token, str) and same(token, field)


def password_digest(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class FailedSignIns:
    """Failed sign-ins of the last `window_s`, per email and per client address, kept in the
    store so that every server process (`vitrine serve --workers N`) counts the same ones:
    past `per_email` (or `per_address`) of them, sign-ins are refused until the oldest is
    older than the window, whatever the password. A sign-in clears its email's failures.

    Each failure is a row of its own (inserted, never a count read and written back), so
    failures made at once in several processes all count. The email and the address are
    stored only as keyed hashes (HMAC-SHA256 with the server's newest secret key): the table
    names no one, and a new key starts the count afresh."""

    def __init__(self, store: "Store", secret: str, per_email: int = 5, per_address: int = 20,
                 window_s: float = 900.0, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.per_email, self.per_address, self.window_s = per_email, per_address, window_s
        self._secret = secret.encode()
        self._clock = clock

    def blocked(self, email: str, address: str) -> bool:
        """Whether this email or this address failed too often lately (one read)."""
        email_key, address_key = self._key("e", email), self._key("a", address)
        counts = self.store.sign_in_failures([email_key, address_key], self._clock() - timedelta(seconds=self.window_s))
        return counts.get(email_key, 0) >= self.per_email or counts.get(address_key, 0) >= self.per_address

    def failed(self, email: str, address: str) -> None:
        now = self._clock()
        self.store.add_sign_in_failure([self._key("e", email), self._key("a", address)], now,
                                       now - timedelta(seconds=self.window_s))

    def succeeded(self, email: str) -> None:
        self.store.clear_sign_in_failures(self._key("e", email))

    def _key(self, kind: str, value: str) -> str:
        digest = hmac.new(self._secret, f"vitrine.admin.sign-in\0{kind}\0{value}".encode(), hashlib.sha256)
        return f"{kind}:{digest.hexdigest()[:40]}"
