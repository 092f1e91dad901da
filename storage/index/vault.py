"""Reading and writing the pseudonym vault tables (the sealing itself is ``dicom_rules.vault``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from storage.index.records import VaultEntry
from storage.index.schema import pseudonym_lookup, pseudonym_vault


class VaultError(Exception):
    pass


def insert_entries(conn: Connection, insert: Callable[[Any], Any], entries: Sequence[VaultEntry]) -> None:
    """Add entries not yet in the vault; a pseudonym's first sealing is kept (they all say the same)."""
    if not entries:
        return
    now = dt.datetime.now(dt.UTC)
    unique = {(e.kind, e.pseudonym): e for e in entries}
    rows = [
        {"kind": e.kind, "pseudonym": e.pseudonym, "key_id": e.key_id, "nonce": e.nonce, "ciphertext": e.ciphertext, "created_at": now}
        for e in unique.values()
    ]
    conn.execute(insert(pseudonym_vault).values(rows).on_conflict_do_nothing())
    lookups = {(d, e.kind, e.pseudonym) for e in unique.values() for d in e.lookups}
    if lookups:
        conn.execute(
            insert(pseudonym_lookup)
            .values([{"digest": d, "kind": k, "pseudonym": p} for d, k, p in sorted(lookups)])
            .on_conflict_do_nothing()
        )


class VaultTables:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def pseudonyms_for(self, kind: str, digests: Iterable[str]) -> list[str]:
        digests = list(digests)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(pseudonym_lookup.c.pseudonym)
                    .where(pseudonym_lookup.c.kind == kind, pseudonym_lookup.c.digest.in_(digests))
                    .distinct()
                )
                return sorted(r[0] for r in rows)
        except SQLAlchemyError as exc:
            raise VaultError(f"vault lookup failed: {type(exc).__name__}") from exc

    def entry(self, kind: str, pseudonym: str) -> VaultEntry | None:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(pseudonym_vault).where(pseudonym_vault.c.kind == kind, pseudonym_vault.c.pseudonym == pseudonym)
                ).first()
        except SQLAlchemyError as exc:
            raise VaultError(f"vault read failed: {type(exc).__name__}") from exc
        if row is None:
            return None
        return VaultEntry(row.kind, row.pseudonym, row.key_id, bytes(row.nonce), bytes(row.ciphertext))

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(pseudonym_vault)).scalar_one())
