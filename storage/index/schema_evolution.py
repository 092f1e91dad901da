"""Bringing an index made by an earlier release up to the tables this one declares, at start.

Only additions are made, and only those that keep every existing row
valid: a missing index, a missing column that may be null or has an empty
default (``default=""``: its rows get ''). Anything else is an error that
names the column, never a silent change.
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, MetaData, String, inspect
from sqlalchemy.sql.ddl import CreateIndex


class SchemaEvolutionError(Exception):
    pass


def add_missing(conn: Connection, metadata: MetaData) -> list[str]:
    """Add the declared columns and indexes the database lacks; what was added, as ``table.name``."""
    inspector = inspect(conn)
    existing_tables = set(inspector.get_table_names())
    added = []
    for table in metadata.sorted_tables:
        if table.name not in existing_tables:
            continue  # made whole by create_all
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                conn.exec_driver_sql(_add_column(conn, table.name, column))
                added.append(f"{table.name}.{column.name}")
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                conn.execute(CreateIndex(index))
                added.append(f"{table.name}.{index.name}")
    return added


def _add_column(conn: Connection, table: str, column: Column) -> str:
    preparer = conn.dialect.identifier_preparer
    kind = column.type.compile(dialect=conn.dialect)
    clause = f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(column.name)} {kind}"
    default = getattr(column.default, "arg", None) if column.default is not None and column.default.is_scalar else None
    if isinstance(column.type, String) and default == "":
        return clause + " NOT NULL DEFAULT ''" if not column.nullable else clause + " DEFAULT ''"
    if column.nullable and default is None:
        return clause
    raise SchemaEvolutionError(f"{table}.{column.name}: a new column that is neither nullable nor defaulted to ''")
