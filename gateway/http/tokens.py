"""Bearer tokens of the HTTP API: an account's token or a share link's, looked up in the index."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.index.accounts import AccountStore, User
from storage.index.commit_watch import CommitWatch
from storage.index.shares import ShareStore, is_share_token

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.http.oidc_tokens import OidcTokens

# A token checked is trusted again without a lookup only while nothing was committed to the index since, and at
# most this long, so that one that expires stops working within a second of its time.
_TRUSTED_SECONDS = 1.0
_MOST_TRUSTED = 10_000  # tokens remembered at once; more start the memory afresh


@dataclass(frozen=True)
class _Checked:
    user: User
    version: int
    until: float  # time.monotonic()


class Tokens:
    """Looks up each request's token in the index. A revocation, made by any process sharing the index, takes effect
    at the next request: a token checked a moment ago is trusted again only while no commit at all was made to the
    index since (storage.index.commit_watch); otherwise, and always on PostgreSQL, it is looked up again."""

    def __init__(self, accounts: AccountStore, shares: ShareStore, watch: CommitWatch) -> None:
        self.accounts = accounts
        self.shares = shares
        self.watch = watch
        self._checked: dict[str, _Checked] = {}
        self.sso: OidcTokens | None = None  # the identity provider's JWTs, when [oidc] is configured

    async def user(self, token: str, request: web.Request | None = None) -> User | None:
        """The token's user or share principal; None if unknown; raises ShareExpired for a dead share link, and
        SsoRefused for the identity provider's JWT not taken (gateway.http.oidc_tokens)."""
        if self.sso is not None and self.sso.looks_like(token):
            return await self.sso.user(token, request)
        version = self.watch.version()  # read before the lookup: a commit during it makes the result untrusted
        now = time.monotonic()
        if version is not None:
            checked = self._checked.get(token)
            if checked is not None and checked.version == version and checked.until > now:
                return checked.user
        lookup = self.shares.token_user if is_share_token(token) else self.accounts.token_user
        user = await asyncio.to_thread(lookup, token)
        if version is not None and user is not None:
            if len(self._checked) >= _MOST_TRUSTED:
                self._checked.clear()
            self._checked[token] = _Checked(user, version, now + _TRUSTED_SECONDS)
        return user
