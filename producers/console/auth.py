"""Console accounts and sessions: password hashes, signed cookies, CSRF tokens.

| piece | how |
|---|---|
| password hash | PBKDF2-HMAC-SHA256, ``pbkdf2_sha256$<iterations>$<salt>$<base64 hash>`` |
| session cookie | ``v1.<payload>.<HMAC-SHA256>`` (base64url), HttpOnly, SameSite=Strict, Secure |
|                | outside development; payload: name, session id, expiry, account fingerprint |
| CSRF token | HMAC of the session id, sent back in ``X-CSRF-Token`` on every unsafe request |

The role is read from the configured accounts on every request, never from the cookie, and
the fingerprint covers the password hash: removing an account or changing its password ends
its sessions. Logging out deletes the cookie in the browser; a copied cookie stays valid
until it expires (``FAPIAO_CONSOLE__SESSION_MAX_AGE_SECONDS``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from schemas.settings import ConsoleUser, Settings, SettingsError, env_name

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "PBKDF2_ITERATIONS",
    "ConsoleAuth",
    "ConsoleSession",
    "hash_password",
    "verify_password",
]

log = logging.getLogger(__name__)

COOKIE_NAME: Final = "fapiao_console"
CSRF_HEADER: Final = "X-CSRF-Token"
# OWASP's 2023 figure for PBKDF2-HMAC-SHA256; the count is stored in each hash, so raising it
# later keeps old hashes valid.
PBKDF2_ITERATIONS: Final = 600_000
_ALGORITHM: Final = "pbkdf2_sha256"
# Checked for unknown names so that the time taken does not tell which names exist.
_NO_ACCOUNT: Final = f"{_ALGORITHM}${PBKDF2_ITERATIONS}$no-such-account${'A' * 43}="


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A PBKDF2-SHA256 hash in Django's layout (so existing tooling can read it)."""
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_urlsafe(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode(), iterations)
    return f"{_ALGORITHM}${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


def verify_password(password: str, encoded: str) -> bool:
    """Does ``password`` match ``encoded``? Malformed hashes never match."""
    try:
        algorithm, iterations, salt, expected = encoded.split("$", 3)
        rounds = int(iterations)
    except ValueError:
        return False
    if algorithm != _ALGORITHM or not 1000 <= rounds <= 10_000_000:
        return False
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt.encode(), rounds)
    return hmac.compare_digest(base64.b64encode(digest).decode("ascii"), expected)


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A signed-in operator: the role comes from the accounts, the CSRF token from the id."""

    name: str
    role: str
    csrf_token: str
    expires_at: int

    @property
    def actor(self) -> str:
        return f"console:{self.name}"


class ConsoleAuth:
    """Checks passwords, issues and reads session cookies, checks CSRF tokens."""

    def __init__(
        self,
        users: Sequence[ConsoleUser],
        secret: bytes,
        *,
        max_age_seconds: int,
        secure_cookie: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._users = {user.name: user for user in users}
        self._secret = secret
        self.max_age_seconds = max_age_seconds
        self.secure_cookie = secure_cookie
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsoleAuth:
        """Accounts from settings; refuses accounts without a session secret outside
        development (a random per-process secret there: every restart signs everyone out)."""
        console = settings.console
        users = console.load_users()
        if console.session_secret is not None:
            secret = console.session_secret.get_secret_value().encode("utf-8")
        elif not users or settings.environment == "development":
            secret = secrets.token_bytes(32)
            if users:
                log.warning(
                    "%s is not set: console sessions end when this process restarts",
                    env_name("console", "session_secret"),
                )
        else:
            raise SettingsError(
                f"{env_name('console', 'session_secret')} is required when console accounts"
                " are configured (a long random text, the same for every API process)"
                " / 配置了操作台账号时必须设置会话密钥"
            )
        secure = (
            console.cookie_secure
            if console.cookie_secure is not None
            else settings.environment != "development"
        )
        return cls(
            users,
            secret,
            max_age_seconds=console.session_max_age_seconds,
            secure_cookie=secure,
        )

    @property
    def has_accounts(self) -> bool:
        return bool(self._users)

    def _mac(self, purpose: str, message: str) -> bytes:
        return hmac.new(self._secret, f"{purpose}\0{message}".encode(), hashlib.sha256).digest()

    def _fingerprint(self, user: ConsoleUser) -> str:
        return _b64(self._mac("account", f"{user.name}\0{user.password_hash.get_secret_value()}"))[
            :16
        ]

    def login(self, name: str, password: str) -> str | None:
        """A session cookie value for a right name and password, else None (slow on purpose:
        call it off the event loop)."""
        user = self._users.get(name)
        encoded = user.password_hash.get_secret_value() if user else _NO_ACCOUNT
        matches = verify_password(password, encoded)
        if user is None or not matches:
            return None
        payload = {
            "u": user.name,
            "sid": secrets.token_urlsafe(16),
            "exp": int(self._clock()) + self.max_age_seconds,
            "fp": self._fingerprint(user),
        }
        body = _b64(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        return f"v1.{body}.{_b64(self._mac('session', body))}"

    def session(self, cookie: str | None) -> ConsoleSession | None:
        """The session a cookie value proves, or None (forged, expired, account gone)."""
        if not cookie or cookie.count(".") != 2:
            return None
        version, body, signature = cookie.split(".")
        if version != "v1":
            return None
        try:
            if not hmac.compare_digest(_unb64(signature), self._mac("session", body)):
                return None
            payload = json.loads(_unb64(body))
            name, sid, expires, fingerprint = (
                str(payload["u"]),
                str(payload["sid"]),
                int(payload["exp"]),
                str(payload["fp"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        user = self._users.get(name)
        if user is None or expires <= self._clock():
            return None
        if not hmac.compare_digest(fingerprint, self._fingerprint(user)):
            return None
        return ConsoleSession(user.name, user.role, _b64(self._mac("csrf", sid)), expires)

    @staticmethod
    def csrf_ok(session: ConsoleSession, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(
            session.csrf_token.encode(), (presented or "").encode("utf-8", "replace")
        )
