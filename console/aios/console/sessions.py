"""Sign-in sessions as sealed cookies: the user's token and who the cluster said they are,
encrypted and authenticated with the console's key (any replica opens them; a restart
keeps them), plus a per-session token that every form posts back (CSRF)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import asdict, dataclass, replace

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "aios-console"
LIFETIME_SECONDS = 8 * 3600
REVIEW_SECONDS = 300
"""How long the cluster's word on a token stands: after that the next request reviews it
again, so a revoked token or a changed group counts within minutes, not at sign-out."""


@dataclass(frozen=True)
class Session:
    """A signed-in user: their bearer token and the identity TokenReview gave it."""

    token: str
    user: str
    groups: tuple[str, ...]
    expires: float
    reviewed: float

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires

    @property
    def stale(self) -> bool:
        return time.time() >= self.reviewed + REVIEW_SECONDS

    def reviewed_again(self, groups: tuple[str, ...]) -> Session:
        return replace(self, groups=groups, reviewed=time.time())


class Sealer:
    """Seals and opens sessions, and derives each one's form token, with one key."""

    def __init__(self, secret: bytes) -> None:
        digest = hashlib.sha256(secret).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self._mac_key = hashlib.sha256(b"csrf:" + secret).digest()

    def seal(self, session: Session) -> str:
        return self._fernet.encrypt(json.dumps(asdict(session)).encode()).decode()

    def open(self, sealed: str | None) -> Session | None:
        """The session in the cookie, or None when it is absent, forged or expired."""
        if not sealed:
            return None
        try:
            raw = json.loads(self._fernet.decrypt(sealed.encode(), ttl=LIFETIME_SECONDS))
            session = Session(
                raw["token"], raw["user"], tuple(raw["groups"]), raw["expires"], raw["reviewed"]
            )
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        return None if session.expired else session

    def form_token(self, session: Session) -> str:
        """Bound to the session's bearer token: another session's form token fails."""
        return hmac.new(self._mac_key, session.token.encode(), hashlib.sha256).hexdigest()

    def form_token_valid(self, session: Session, posted: str) -> bool:
        return hmac.compare_digest(self.form_token(session), posted)


def new_session(token: str, user: str, groups: list[str]) -> Session:
    now = time.time()
    return Session(token, user, tuple(groups), now + LIFETIME_SECONDS, now)
