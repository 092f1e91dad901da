"""The heartbeat registry: every gateway process of the cluster says, each heartbeat, that it is alive.

One row per process (node name and process label): its role, pid, version,
start and last beat, and what it reports of itself (the spool backlog). The
cluster view of ``/health`` lists them with the age of their last beat; a row
not renewed for an hour is forgotten (a process that died and was replaced).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from storage.index.schema import cluster_nodes
from storage.index.tasks import now_expr
from storage.index.times import as_utc, utc_now

FORGET_AFTER = dt.timedelta(hours=1)
_COLUMNS = ("role", "pid", "version", "started_at")


class NodeRegistry:
    """Heartbeats of the cluster's processes, and the list of them for the cluster view."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def beat(self, node: str, process: str, info: dict[str, Any]) -> None:
        """Record a heartbeat; ``info`` has role, pid, version and started_at, anything else is shown as given."""
        extra = {k: v for k, v in info.items() if k not in _COLUMNS}
        values = {
            "role": str(info.get("role", "")), "pid": int(info.get("pid", 0)), "version": str(info.get("version", "")),
            "started_at": info.get("started_at") or utc_now(), "info": json.dumps(extra),
        }  # fmt: skip
        with self.engine.begin() as conn:
            now = now_expr(conn)
            stmt = self._insert(cluster_nodes).values(node=node, process=process, beat_at=now, **values)
            conn.execute(stmt.on_conflict_do_update(index_elements=["node", "process"], set_={**values, "beat_at": now}))

    def forget(self, node: str, process: str) -> None:
        """Remove a process that stopped cleanly."""
        with self.engine.begin() as conn:
            conn.execute(delete(cluster_nodes).where(cluster_nodes.c.node == node, cluster_nodes.c.process == process))

    def cluster(self, *, stale_after: float | None = None) -> list[dict[str, Any]]:
        """Every process seen within the hour, by node: its last beat's age, and ``stale`` past ``stale_after`` s."""
        with self.engine.begin() as conn:
            now = as_utc(conn.execute(select(now_expr(conn))).scalar_one())
            conn.execute(delete(cluster_nodes).where(cluster_nodes.c.beat_at < now - FORGET_AFTER))
            rows = conn.execute(select(cluster_nodes).order_by(cluster_nodes.c.node, cluster_nodes.c.process)).all()
        listed = []
        for r in rows:
            age = max((now - as_utc(r.beat_at)).total_seconds(), 0.0)
            entry = {
                "node": r.node, "process": r.process, "role": r.role, "pid": r.pid, "version": r.version,
                "started_at": as_utc(r.started_at).isoformat(), "last_beat": as_utc(r.beat_at).isoformat(),
                "age_seconds": round(age, 3), **json.loads(r.info or "{}"),
            }  # fmt: skip
            if stale_after is not None:
                entry["stale"] = age > stale_after
            listed.append(entry)
        return listed
