"""The plan a database keeps for a prepared statement: what a partial index must be found by."""

from __future__ import annotations

import re
from typing import cast

from sqlalchemy import Connection, Executable
from sqlalchemy.sql import ClauseElement


def prepared_plan(conn: Connection, statement: Executable) -> str:
    """The plan of `statement`, compiled as the service compiles it, made before its values are known.

    That is the plan a prepared statement keeps: PostgreSQL's generic plan (psycopg prepares a
    query from its fifth run), and SQLite's plan at prepare time (to use a partial index for a
    bound value, SQLite prepares the statement again at each run, once the value is bound).
    """
    compiled = cast(ClauseElement, statement).compile(
        dialect=conn.dialect, compile_kwargs={"render_postcompile": True}
    )
    sql = str(compiled)
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", (None,) * sql.count("?")).all()
        return "\n".join(row[-1] for row in rows)
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    conn.exec_driver_sql("PREPARE probe AS " + re.sub(r"%\((\w+)\)s", number, sql))
    conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
    try:
        args = f"({', '.join('NULL' for _ in names)})" if names else ""
        return "\n".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN EXECUTE probe{args}"))
    finally:
        conn.exec_driver_sql("DEALLOCATE probe")
        conn.exec_driver_sql("RESET plan_cache_mode")
