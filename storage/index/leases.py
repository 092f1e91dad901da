"""Named site leases: what one process of the whole site does at a time (the HL7 listener, the stable-study scan).

A lease is one row per name: its holder (``<node>/<pid>``) and until when. The
holder renews it well before it ends (each heartbeat); a holder that dies stops
renewing and, once the lease has run out, the next process to ask takes it.
Acquiring is one upsert whose update applies only when the row is the asker's
own or has run out, so two askers at once cannot both win. Times are the
database's clock on PostgreSQL (see storage.index.tasks).
"""

from __future__ import annotations

from sqlalchemy import Engine, case, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from storage.index.schema import site_leases
from storage.index.tasks import lease_end, now_expr


class Leases:
    """Acquire (or renew), release and look up named leases shared by every node on one index."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def acquire(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take the lease for ``ttl_seconds``, or renew it when ``holder`` has it; False while another holds it."""
        l = site_leases  # noqa: E741
        with self.engine.begin() as conn:
            now, end = now_expr(conn), lease_end(conn, ttl_seconds)
            stmt = self._insert(l).values(name=name, holder=holder, lease_until=end, acquired_at=now)
            stmt = stmt.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    "holder": holder,
                    "lease_until": end,
                    "acquired_at": case((l.c.holder == holder, l.c.acquired_at), else_=now),
                },
                where=or_(l.c.holder == holder, l.c.lease_until < now),
            )
            return conn.execute(stmt.returning(l.c.holder)).first() is not None

    def release(self, name: str, holder: str) -> None:
        """Give the lease up at once (a clean stop), if ``holder`` has it."""
        with self.engine.begin() as conn:
            conn.execute(delete(site_leases).where(site_leases.c.name == name, site_leases.c.holder == holder))

    def holder(self, name: str) -> str | None:
        """Who holds the lease now; None when no one does (never taken, released or run out)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(site_leases.c.holder).where(site_leases.c.name == name, site_leases.c.lease_until >= now_expr(conn))
            ).scalar()
