"""Alembic environment: the URL comes from the caller (kengele db upgrade), the metadata from app.models."""

from alembic import context

from app.db import make_engine
from app.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            _run(conn)
        else:
            # A batch migration copies a table and drops the old one. With foreign keys on, SQLite
            # deletes the old table's rows first, and its ON DELETE actions would empty or unlink
            # every table that references it (alerts, delivery events, check-ins). The pragma only
            # takes effect outside a transaction: set it on the driver's connection, before any.
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute("PRAGMA foreign_keys=OFF")
            try:
                _run(conn)
            finally:
                driver.execute("PRAGMA foreign_keys=ON")
    engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
