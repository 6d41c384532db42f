"""Accounts: passwords stored as Argon2id hashes (memory-hard), API tokens stored as
their SHA-256 (a token is random, 256 bits: no KDF needed, and lookups stay exact), and
the CSRF token of a browser session."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from pipeline.web.db import Database, User

_HASHER = PasswordHasher()  # Argon2id, the library's defaults (64 MiB, 3 passes)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MIN_PASSWORD = 8


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(db: Database, name: str, password: str) -> str:
    """Create the user; returns their API token (shown once, stored only as a digest)."""
    if not _NAME.match(name):
        raise ValueError("a user name is 1-64 letters, digits, '_', '.' or '-'")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password has at least {MIN_PASSWORD} characters")
    token = secrets.token_urlsafe(32)
    db.add_user(name, _HASHER.hash(password), token_digest(token))
    return token


def check_password(db: Database, name: str, password: str) -> User | None:
    """The user when ``password`` is theirs, else None (the same time is spent on an
    unknown name, so a response's timing does not tell which names exist)."""
    user = db.user_by_name(name)
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _HASHER.check_needs_rehash(user.password_hash):
        db.set_password_hash(user.id, _HASHER.hash(password))
    return user


def user_for_token(db: Database, token: str) -> User | None:
    return db.user_by_token(token_digest(token)) if token else None


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(expected, given)


_DUMMY = _HASHER.hash("not a password of anyone")
