"""Coupon codes as shoppers type them: the alphabet Vitrine generates them from, the
normalized form they are compared in, and patterns such as `WELCOME-XXXXXXXX`."""

from __future__ import annotations

import re
import secrets

# No 0/O, 1/I/L: nothing a shopper can misread when copying a code from a popup.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
RANDOM = "X"  # the character of a pattern replaced by a random one
DEFAULT_PATTERN = "XXXXXXXX"
MIN_RANDOM = 6  # 31**6 (887 million) codes at the least: a guessed code is as good as none
MAX_LENGTH = 64
# What a shopper may type between the characters of a code: spaces and dashes of any kind.
_IGNORED = re.compile(r"[\s\-\u2010-\u2015\u2212]+")
_CODE = re.compile(r"^[A-Z0-9]{1,64}$")


class CodeError(ValueError):
    """A code, prefix or pattern that cannot be used; the message says why."""


def normalize(typed: str) -> str:
    """The form codes are stored and compared in: upper case, without spaces or dashes."""
    return _IGNORED.sub("", typed).upper()


def check_code(typed: str) -> str:
    """The normalized code, or CodeError saying what is wrong with it (for imports)."""
    code = normalize(typed)
    if not code:
        raise CodeError("empty code")
    if len(code) > MAX_LENGTH:
        raise CodeError(f"code {typed[:20]!r}... is longer than {MAX_LENGTH} characters")
    if not _CODE.match(code):
        raise CodeError(f"code {typed!r} has characters other than letters, digits, spaces and dashes")
    return code


class Pattern:
    """How generated codes look: `prefix` as given, then the pattern, each X of it a random
    character of ALPHABET and every other character kept (`XXXX-XXXX`)."""

    def __init__(self, prefix: str = "", pattern: str = DEFAULT_PATTERN) -> None:
        pattern = pattern or DEFAULT_PATTERN
        for part, name in ((prefix, "prefix"), (pattern, "pattern")):
            if normalize(part) and not _CODE.match(normalize(part)):
                raise CodeError(f"the {name} {part!r} may hold only letters, digits and dashes")
        self.random = pattern.count(RANDOM)
        if self.random < MIN_RANDOM:
            raise CodeError(
                f"the pattern {pattern!r} has {self.random} random characters (X); it needs at least {MIN_RANDOM} "
                "so that codes cannot be guessed")
        if len(normalize(prefix + pattern)) > MAX_LENGTH:
            raise CodeError(f"prefix and pattern make codes longer than {MAX_LENGTH} characters")
        self.prefix, self.pattern = prefix, pattern

    def generate(self) -> str:
        """One new code as it is shown (normalize() gives its stored form)."""
        return self.prefix + "".join(secrets.choice(ALPHABET) if c == RANDOM else c for c in self.pattern)
