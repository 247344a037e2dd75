"""Signed visitor tokens: a random visitor id bound to one shop, as cookie and header."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

VISITOR_SALT = "vitrine.visitor"
TOKEN_HEADER = "X-Visitor-Token"


# A valid token younger than this is sent back as it came; an older one is signed again
# (with the newest key), which keeps a returning visitor's token from expiring. Signing
# on every request was a tenth of a page call.
RENEW_AFTER_S = 86400


@dataclass(frozen=True)
class Identity:
    visitor_id: str
    is_new: bool  # no valid token came with the request: a visitor we have not seen
    token: str | None = None  # the valid token it came with, when it need not be renewed yet


def new_visitor_id() -> str:
    return secrets.token_urlsafe(16)


# How many valid tokens a signer remembers (TokenSigner.check); then it starts again.
VALID_TOKENS_KEPT = 8192


class TokenSigner:
    """Signs and checks visitor tokens with a list of keys (newest last) for rotation."""

    def __init__(self, keys: list[str], max_age_seconds: int) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self.keys = list(keys)
        # itsdangerous signs with the last key and accepts any of them.
        self._serializer = URLSafeTimedSerializer(keys, salt=VISITOR_SALT)
        self.max_age_seconds = max_age_seconds
        # Tokens found valid: (shop, visitor id, when signed). A returning visitor sends the
        # same token on every call, and checking its signature (base64, HMAC, JSON) was a
        # tenth of the event loop's time in a page call. Only valid tokens go in, so made-up
        # ones cannot fill it; the keys are this signer's, and the age is checked each time.
        self._valid: dict[str, tuple[str, str, float]] = {}

    def sign(self, shop: str, visitor_id: str) -> str:
        return self._serializer.dumps({"s": shop, "v": visitor_id})

    def visitor_id(self, shop: str, token: str | None) -> str | None:
        """The visitor id in a valid token for this shop; None when tampered, expired or foreign."""
        checked = self.check(shop, token)
        return checked[0] if checked else None

    def check(self, shop: str, token: str | None) -> tuple[str, float] | None:
        """(visitor id, seconds since it was signed) of a valid token for this shop, else None."""
        if not token or len(token) > 512:
            return None
        known = self._valid.get(token)
        if known is not None:
            token_shop, vid, signed_at = known
            age = time.time() - signed_at
            return (vid, age) if token_shop == shop and age <= self.max_age_seconds else None
        try:
            data, signed = self._serializer.loads(token, max_age=self.max_age_seconds, return_timestamp=True)
        except BadData:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("s"), str):
            return None
        vid = data.get("v")
        if not (isinstance(vid, str) and 0 < len(vid) <= 64):
            return None
        if len(self._valid) >= VALID_TOKENS_KEPT:
            self._valid.clear()
        self._valid[token] = (data["s"], vid, signed.timestamp())
        if data["s"] != shop:
            return None
        return vid, time.time() - signed.timestamp()


def cookie_name(prefix: str, shop: str) -> str:
    return f"{prefix}_{shop}"


def identify(
    signer: TokenSigner, request: Request, shop: str, cookie_prefix: str, body_token: str | None = None
) -> Identity:
    """Who is this? Header first (it survives third-party cookie blocking), then body, then cookie."""
    candidates = (
        request.headers.get(TOKEN_HEADER),
        body_token,
        request.cookies.get(cookie_name(cookie_prefix, shop)),
    )
    for token in candidates:
        checked = signer.check(shop, token)
        if checked:
            vid, age = checked
            return Identity(visitor_id=vid, is_new=False, token=token if age < RENEW_AFTER_S else None)
    return Identity(visitor_id=new_visitor_id(), is_new=True)


def attach_token(
    response: Response, token: str, shop: str, cookie_prefix: str, max_age: int, https: bool
) -> None:
    """Send the token as a first-party cookie and mirror it in the response header.

    Browsers drop `SameSite=None` cookies that are not `Secure`, so over plain HTTP (a local
    demo) the cookie is `SameSite=Lax` and cross-site pages rely on the header mirror.
    """
    response.set_cookie(
        cookie_name(cookie_prefix, shop),
        token,
        max_age=max_age,
        httponly=True,
        secure=https,
        samesite="none" if https else "lax",
    )
    if https:
        # Starlette only writes `Partitioned` on Python 3.14+ (and raises before), so the
        # attribute is appended to the header just written: CHIPS needs it on every Python.
        name, value = response.raw_headers[-1]
        response.raw_headers[-1] = (name, value + b"; Partitioned")
    response.headers[TOKEN_HEADER] = token


def clear_token(response: Response, shop: str, cookie_prefix: str, https: bool) -> None:
    """Tell the browser to drop the visitor cookie: the one attach_token sets (name, path and
    attributes alike: a partitioned cookie is only cleared by a partitioned Set-Cookie), now
    empty and already expired."""
    attach_token(response, "", shop, cookie_prefix, 0, https)
    del response.headers[TOKEN_HEADER]
