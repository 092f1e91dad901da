"""Local accounts' second factor in the index: a sealed TOTP secret per user, its recovery codes, its last step.

Only what is sealed is kept (``gateway.totp`` seals and opens): this module never sees a secret in clear.
Every "good once" rule is one conditional statement, so that two gateway processes given the same code at the
same moment cannot both accept it: a time step is taken only if it is later than the last one taken, a
recovery code only while it is unused, a pending enrolment confirmed only while it is still pending.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from storage.index.schema import recovery_codes, second_factor_keys, second_factors
from storage.index.times import utc_now


@dataclass(frozen=True)
class SealedFactor:
    """One user's TOTP secret as kept: sealed under ``key_id``; ``confirmed`` once a first code matched it."""

    user_pk: int
    key_id: str
    nonce: bytes
    ciphertext: bytes
    confirmed: bool
    last_step: int | None


class SecondFactorStore:
    """The second_factors and recovery_codes tables (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def factor(self, user_pk: int) -> SealedFactor | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(second_factors).where(second_factors.c.user_pk == user_pk)).first()
        if row is None:
            return None
        return SealedFactor(
            row.user_pk, row.key_id, bytes(row.nonce), bytes(row.ciphertext), row.confirmed_at is not None,
            None if row.last_step is None else int(row.last_step),
        )  # fmt: skip

    def begin(self, user_pk: int, key_id: str, nonce: bytes, ciphertext: bytes) -> SealedFactor:
        """Keep a new pending secret for a user with none; the factor kept (another process's, if it was first)."""
        insert_ = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        with self.engine.begin() as conn:
            conn.execute(
                insert_(second_factors)
                .values(user_pk=user_pk, key_id=key_id, nonce=nonce, ciphertext=ciphertext, created_at=utc_now())
                .on_conflict_do_nothing(index_elements=["user_pk"])
            )
        made = self.factor(user_pk)
        assert made is not None
        return made

    def confirm(self, user_pk: int, step: int, recovery_digests: Iterable[str]) -> bool:
        """Confirm a pending secret with the step of its first code, and keep its recovery codes; False when it was
        not pending (confirmed meanwhile, or reset)."""
        now = utc_now()
        c = second_factors.c
        with self.engine.begin() as conn:
            done = conn.execute(
                update(second_factors).where(c.user_pk == user_pk, c.confirmed_at.is_(None)).values(confirmed_at=now, last_step=step)
            )
            if not done.rowcount:
                return False
            conn.execute(delete(recovery_codes).where(recovery_codes.c.user_pk == user_pk))
            conn.execute(insert(recovery_codes), [{"digest": d, "user_pk": user_pk, "created_at": now} for d in recovery_digests])
        return True

    def take_step(self, user_pk: int, step: int) -> bool:
        """Accept a code of this time step: only if no code of this step or a later one was accepted (replay).

        Committed without waiting for the disk (every login with a code does this; a flush costs milliseconds):
        SQLite's ``synchronous=NORMAL`` under WAL, PostgreSQL's ``synchronous_commit = off``, for this one statement.
        A crash of the process loses nothing; a power cut may lose the last second's steps, and so let a code used
        then be used once more within its 90 seconds."""
        c = second_factors.c
        taken = (
            update(second_factors)
            .where(c.user_pk == user_pk, c.confirmed_at.is_not(None), or_(c.last_step.is_(None), c.last_step < step))
            .values(last_step=step)
        )
        with self.engine.connect() as conn:
            if conn.dialect.name != "sqlite":
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                done = conn.execute(taken)
                conn.commit()
                return bool(done.rowcount)
            level = int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())
            conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
            try:
                done = conn.execute(taken)
                conn.commit()
            finally:
                conn.rollback()
                conn.exec_driver_sql(f"PRAGMA synchronous={level}")  # the pool's connection as it was
                conn.commit()
        return bool(done.rowcount)

    def use_recovery_code(self, user_pk: int, digest: str) -> bool:
        """Spend one recovery code; False when it is not this user's or was spent already."""
        r = recovery_codes.c
        with self.engine.begin() as conn:
            done = conn.execute(
                update(recovery_codes).where(r.digest == digest, r.user_pk == user_pk, r.used_at.is_(None)).values(used_at=utc_now())
            )
        return bool(done.rowcount)

    def recovery_codes_left(self, user_pk: int) -> int:
        r = recovery_codes.c
        with self.engine.connect() as conn:
            return len(conn.execute(select(r.digest).where(r.user_pk == user_pk, r.used_at.is_(None))).all())

    def reset(self, user_pk: int) -> bool:
        """Forget a user's secret and recovery codes (a lost phone): the next login enrols afresh. Whether one was kept."""
        with self.engine.begin() as conn:
            conn.execute(delete(recovery_codes).where(recovery_codes.c.user_pk == user_pk))
            done = conn.execute(delete(second_factors).where(second_factors.c.user_pk == user_pk))
        return bool(done.rowcount)

    def local_key(self) -> bytes:
        """The sealing key when there is no de-identification secret: 32 random bytes made once, kept in the index
        so that every process sharing it opens alike (and so, whoever holds a copy of the index too)."""
        k = second_factor_keys.c
        with self.engine.begin() as conn:
            key = conn.execute(select(k.key).where(k.pk == 1)).scalar()
            if key is None:
                insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                made = insert_(second_factor_keys).values(pk=1, key=os.urandom(32), created_at=utc_now())
                conn.execute(made.on_conflict_do_nothing(index_elements=["pk"]))
                key = conn.execute(select(k.key).where(k.pk == 1)).scalar_one()
        return bytes(key)
