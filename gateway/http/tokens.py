"""Bearer tokens of the HTTP API: an account's token or a share link's, looked up in the index."""

from __future__ import annotations

import asyncio

from storage.index.accounts import AccountStore, User
from storage.index.shares import ShareStore, is_share_token


class Tokens:
    """Looks up each request's token in the index, every time: a revocation, made by any process sharing the
    index, takes effect at the next request. The lookup is one indexed read (a fraction of a millisecond)."""

    def __init__(self, accounts: AccountStore, shares: ShareStore) -> None:
        self.accounts = accounts
        self.shares = shares

    async def user(self, token: str) -> User | None:
        """The token's user or share principal; None if unknown; raises ShareExpired for a dead share link."""
        lookup = self.shares.token_user if is_share_token(token) else self.accounts.token_user
        return await asyncio.to_thread(lookup, token)
