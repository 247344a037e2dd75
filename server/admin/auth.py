"""Who is signed in to the dashboard: argon2 password hashes, the signed session cookie, CSRF
tokens and the limit on failed sign-ins (docs/security.md#the-dashboards-sign-in)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadData, URLSafeTimedSerializer

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
    """Failed sign-ins of the last `window_s`, per email and per client address, in this
    process: past `per_email` (or `per_address`) of them, sign-ins are refused until the
    oldest is older than the window, whatever the password."""

    def __init__(self, per_email: int = 5, per_address: int = 20, window_s: float = 900.0,
                 max_keys: int = 10_000) -> None:
        self.per_email, self.per_address, self.window_s = per_email, per_address, window_s
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, email: str, address: str) -> bool:
        with self._lock:
            return (self._count("e:" + email) >= self.per_email
                    or self._count("a:" + address) >= self.per_address)

    def failed(self, email: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) >= self.max_keys:  # bounded memory: forget the oldest keys
                for key in list(self._failures)[: self.max_keys // 10]:
                    del self._failures[key]
            for key in ("e:" + email, "a:" + address):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, email: str) -> None:
        with self._lock:
            self._failures.pop("e:" + email, None)

    def _count(self, key: str) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        cutoff = time.monotonic() - self.window_s
        while times and times[0] < cutoff:
            times.popleft()
        return len(times)
