"""Key rotation: every encrypted value sealed again, every blind index computed again, under the newest key.

The steps (README, "Phone numbers at rest"): put the new key first (KENGELE_SECRET_KEY, with the old
one in KENGELE_SECRET_KEYS), restart every process, run `kengele keys rotate`, then remove the old
key. Rows are rewritten a batch per transaction, so the service keeps running, and a rotation that
stops is resumed by running it again: rows already under the newest key are not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    Column,
    ColumnElement,
    Engine,
    Table,
    Text,
    bindparam,
    func,
    or_,
    select,
    type_coerce,
    update,
)

from app.crypto import blind_indexes, encrypted_columns, keyring_of
from app.models import Base
from app.services.progress import Progress

BATCH = 500


@dataclass(frozen=True, slots=True)
class Sealed:
    """A table with encrypted columns, and the blind indexes computed from them."""

    table: Table
    key: Column[object]
    columns: tuple[Column[object], ...]
    indexes: tuple[tuple[str, str], ...]  # (number column, its index column)


def sealed_tables() -> list[Sealed]:
    """Every table holding encrypted values, read from the models."""
    found = []
    for table in Base.metadata.sorted_tables:
        columns = encrypted_columns(table)
        if columns:
            (key,) = table.primary_key.columns
            found.append(Sealed(table, key, tuple(columns), blind_indexes(table)))
    return found


def _stale(sealed: Sealed, prefix: str) -> ColumnElement[bool]:
    # Read as the text stored (no decryption); NULLs drop out of the comparison, as they should.
    return or_(*(func.substr(type_coerce(c, Text), 1, len(prefix)) != prefix for c in sealed.columns))


def pending(engine: Engine) -> dict[str, int]:
    """Rows per table with a value not sealed under the newest key (a rotation's work)."""
    prefix = keyring_of(engine).current_prefix
    with engine.connect() as conn:
        return {
            s.table.name: int(
                conn.execute(select(func.count()).select_from(s.table).where(_stale(s, prefix))).scalar_one()
            )
            for s in sealed_tables()
        }


def rotate(engine: Engine, *, batch: int = BATCH, progress: Progress | None = None) -> int:
    """Seal every row not under the newest key again, a batch per transaction; the rows rewritten."""
    keyring = keyring_of(engine)
    todo = pending(engine)
    done_all = 0
    for sealed in sealed_tables():
        total = todo[sealed.table.name]
        if progress:
            progress(sealed.table.name, 0, total)
        if not total:
            continue
        stale = _stale(sealed, keyring.current_prefix)
        stored = [type_coerce(c, Text).label(c.key) for c in sealed.columns]
        written = [c.key for c in sealed.columns] + [index for _, index in sealed.indexes]
        rewrite = (
            update(sealed.table)
            .where(sealed.key == bindparam("b_key"))
            .values({name: bindparam(f"b_{name}") for name in written})
        )
        done, last = 0, None
        while True:
            # One transaction a batch: committed work survives an interruption. FOR UPDATE (SQLite's
            # BEGIN IMMEDIATE likewise) keeps a concurrent change from being overwritten.
            with engine.begin() as conn:
                query = select(sealed.key, *stored).where(stale).order_by(sealed.key).limit(batch)
                if last is not None:
                    query = query.where(sealed.key > last)
                rows = conn.execute(query.with_for_update()).all()
                if not rows:
                    break
                params = []
                for row in rows:
                    values: dict[str, object] = {"b_key": row[0]}
                    for column in sealed.columns:  # clear here; the column type seals it under the newest key
                        token = row._mapping[column.key]
                        values[f"b_{column.key}"] = None if token is None else keyring.decrypt(token)
                    for source, index in sealed.indexes:
                        number = values[f"b_{source}"]
                        values[f"b_{index}"] = None if number is None else keyring.index(str(number))
                    params.append(values)
                conn.execute(rewrite, params)
            last = rows[-1][0]
            done += len(rows)
            if progress:
                progress(sealed.table.name, done, max(total, done))
        done_all += done
    return done_all
