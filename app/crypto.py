"""Phone numbers and provider forms at rest: encrypted (AES-GCM), found again by a blind index.

Whoever takes the database file (or a backup, or a `pg_dump`) must learn no reporter's number
from it. Every such column is `Encrypted`: the value is sealed on its way into the database and
opened on its way out, so services read and write plain strings and never see a ciphertext.
Equality in SQL cannot work on randomised ciphertexts, so a number that is looked up also has a
keyed hash beside it (`BlindIndex`): HMAC-SHA256 under a key only the service holds, equal for
equal numbers, useless to whoever lacks the key.

A stored value reads `k1:<key id>:<base64 of nonce + ciphertext + tag>`. The key id names the key
that sealed it, so several keys may be configured at once (KENGELE_SECRET_KEYS, newest first):
rows sealed under an older key stay readable, new rows are sealed under the newest, and
`kengele keys rotate` (app/services/keys.py) moves the old rows over.

Each configured secret is stretched once, at start, by HKDF-SHA256 into an encryption key, an
index key and its id; nothing is derived per value. Secrets are taken as given (text): generate
them with `kengele keys generate` (32 random bytes).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import (
    Column,
    ColumnDefault,
    ColumnElement,
    Connection,
    Engine,
    Table,
    Text,
    func,
    or_,
    type_coerce,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import operators
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.engine.default import DefaultExecutionContext

    from app.config import Settings

log = logging.getLogger("kengele.crypto")

VERSION = "k1"
NONCE_BYTES = 12
KEY_ID_CHARS = 8
TAG_BYTES = 16
# "k1:<key id>:" and the base64 of a nonce and a tag: what a sealed "" is, whatever the key.
EMPTY_SEALED_LENGTH = len(VERSION) + 1 + KEY_ID_CHARS + 1 + 4 * ((NONCE_BYTES + TAG_BYTES + 2) // 3)
# What a number removed by retention is replaced with starts with this (app/services/retention.py).
PSEUDONYM = "~"
DEV_KEY_FILE = "kengele.key"


class CryptoError(Exception):
    """A stored value that cannot be opened."""


class MissingKey(CryptoError):
    """A value sealed under a key that is not configured."""


class NotEncrypted(CryptoError):
    """A value in an encrypted column that is not one of ours (or was altered)."""


@dataclass(frozen=True, slots=True)
class Key:
    """One configured secret, stretched into what sealing and indexing need."""

    id: str
    aead: AESGCM
    index_key: bytes

    @classmethod
    def derive(cls, secret: str) -> Key:
        material = secret.encode()

        def expand(purpose: bytes) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"kengele", info=purpose).derive(material)

        return cls(
            id=expand(b"kengele key id v1").hex()[:KEY_ID_CHARS],
            aead=AESGCM(expand(b"kengele encryption v1")),
            index_key=expand(b"kengele blind index v1"),
        )


def _normal(text: str) -> str:
    # Stored numbers are E.164 already where valid; what differs is only the spacing around them.
    return text.strip()


class Keyring:
    """The configured keys, newest first: seal under the newest, open under any, index under each."""

    def __init__(self, secrets: Sequence[str]) -> None:
        unique = [s for s in dict.fromkeys(secrets) if s]
        if not unique:
            raise ValueError("a keyring needs at least one key")
        self.keys = tuple(Key.derive(s) for s in unique)
        self.newest = self.keys[0]
        self._by_id = {k.id: k for k in self.keys}
        if len(self._by_id) != len(self.keys):  # 1 in 4 billion: generate another key
            raise ValueError("two configured keys have the same id; generate a new key")
        self._prefix = f"{VERSION}:{self.newest.id}:"

    @property
    def ids(self) -> list[str]:
        return [k.id for k in self.keys]

    def encrypt(self, text: str, *, context: bytes | None = None) -> str:
        """Seal `text` under the newest key; `context` (authenticated, not stored) keeps a value sealed
        for one use from opening in another: a dashboard URL's search is not a stored number."""
        # Random 96-bit nonces are safe for 2^32 values under one key: decades of any network's traffic.
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.newest.aead.encrypt(nonce, text.encode(), context)
        return self._prefix + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str, *, context: bytes | None = None) -> str:
        """Open a value sealed under any configured key (with the `context` it was sealed with)."""
        version, _, rest = token.partition(":")
        key_id, _, body = rest.partition(":")
        if version != VERSION or not body:
            raise NotEncrypted("a value in an encrypted column is not encrypted (run `kengele db upgrade`)")
        key = self._by_id.get(key_id)
        if key is None:
            raise MissingKey(
                f"a value is encrypted under key {key_id}, which is not configured: "
                f"add it to KENGELE_SECRET_KEYS (configured: {', '.join(self.ids)})"
            )
        try:
            data = base64.b64decode(body, validate=True)
            return key.aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], context).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise NotEncrypted(
                f"a value encrypted under key {key_id} does not open: it was altered"
            ) from None

    def is_current(self, token: str) -> bool:
        """Whether `token` is sealed under the newest key (nothing for a rotation to do)."""
        return token.startswith(self._prefix)

    @property
    def current_prefix(self) -> str:
        return self._prefix

    def index(self, text: str) -> str:
        """The blind index of `text` under the newest key (what new rows store).

        A retention pseudonym (`~letters`) is no number and is its own index, under every key: it
        joins no real sender's reports, and a rotation keeps it.
        """
        if is_pseudonym(text):
            return text
        return hmac.digest(self.newest.index_key, _normal(text).encode(), "sha256").hex()

    def indexes(self, text: str) -> list[str]:
        """The blind index of `text` under every key: what a lookup matches while old rows remain."""
        if is_pseudonym(text):
            return [text]
        data = _normal(text).encode()
        return [hmac.digest(k.index_key, data, "sha256").hex() for k in self.keys]

    def indexes_of(self, texts: Iterable[str]) -> list[str]:
        """The blind indexes of several values under every key, for one `IN` lookup."""
        return [i for text in texts for i in self.indexes(text)]


def is_pseudonym(text: str) -> bool:
    """Whether `text` is a retention pseudonym (`~` and 12 letters), not a sender's number as given."""
    return len(text) == 13 and text.startswith(PSEUDONYM) and text[1:].isascii() and text[1:].isalpha()


def generate_secret() -> str:
    """A new secret for KENGELE_SECRET_KEY: 32 random bytes, URL-safe base64."""
    return secrets.token_urlsafe(32)


# -- which keyring an engine uses ------------------------------------------------------------------
# Per engine (through its dialect, which every value passes with), not per process: an app built by
# create_app(settings) uses its settings' keys, and a test may build several with different keys.
_KEYRINGS: WeakKeyDictionary[Dialect, Keyring] = WeakKeyDictionary()


def attach(engine: Engine, keyring: Keyring) -> Engine:
    """Make `engine` seal and open encrypted columns with `keyring`."""
    _KEYRINGS[engine.dialect] = keyring
    return engine


def keyring_of(bind: Engine | Connection | Session | Dialect) -> Keyring:
    """The keyring of the engine behind a session, connection or dialect."""
    if isinstance(bind, Session):
        bind = bind.get_bind()
    dialect = bind if isinstance(bind, Dialect) else bind.dialect
    try:
        return _KEYRINGS[dialect]
    except KeyError:
        raise RuntimeError(
            "this database engine has no keyring for encrypted columns: "
            "build it with app.db.make_engine(url, keyring=...)"
        ) from None


def keyring_for(settings: Settings) -> Keyring:
    """The keyring the settings configure; in development without one, the data folder's key file."""
    if settings.key_secrets:
        return Keyring(settings.key_secrets)
    if settings.env != "development":  # the settings refuse this already; never fall back to a file
        raise RuntimeError("KENGELE_SECRET_KEY is not set")
    from app.db import sqlite_path

    path = sqlite_path(settings.database_url)
    folder = Path(path).parent if path else Path.cwd()
    return Keyring([_development_secret(str((folder / DEV_KEY_FILE).absolute()))])


@lru_cache(maxsize=8)
def _development_secret(path: str) -> str:
    """Read the development key file, creating it (0600) on first use; warn once per process."""
    file = Path(path)
    created = False
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(generate_secret() + "\n")
        try:
            os.link(tmp, file)  # atomic: of two processes starting at once, one key wins
            created = True
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    secret = file.read_text().strip()
    if not secret:
        raise RuntimeError(f"{file} is empty: delete it (a new key is made) or set KENGELE_SECRET_KEY")
    log.warning(
        "KENGELE_SECRET_KEY is not set: phone numbers are encrypted under the development key %s %s; "
        "keep it with the database (without it the numbers cannot be read), and set KENGELE_SECRET_KEY "
        "in production",
        file,
        "(generated now)" if created else "(reused)",
    )
    return secret


# -- the column types ------------------------------------------------------------------------------
_ALLOWED = {operators.is_, operators.is_not}


class _Opaque(TypeDecorator.Comparator[str]):
    """Refuses comparisons in SQL: a fresh nonce makes every ciphertext differ, so `==` never matches."""

    def operate(self, op: Any, *other: Any, **kwargs: Any) -> Any:
        if op in _ALLOWED:
            return super().operate(op, *other, **kwargs)
        raise TypeError(f"{self.expr} is encrypted: compare its blind index column (keyring.indexes)")

    def reverse_operate(self, op: Any, other: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self.expr} is encrypted: compare its blind index column (keyring.indexes)")


class Encrypted(TypeDecorator[str]):
    """A text column stored sealed under the engine's keyring, read back in clear."""

    impl = Text
    cache_ok = True
    comparator_factory = _Opaque

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else keyring_of(dialect).encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else keyring_of(dialect).decrypt(value)


class BlindIndex:
    """The default of an index column: the blind index of `source` in the same row, computed on insert.

    As a column default it fills every insert, ORM or Core (intake batches, outbox rows, check-in
    rounds) without the caller naming it; an ORM update of `source` refreshes it (app.models).
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, context: DefaultExecutionContext) -> str | None:
        value = context.get_current_parameters().get(self.source)
        return None if value is None else keyring_of(context.dialect).index(value)


@lru_cache(maxsize=64)
def blind_indexes(table: Table) -> tuple[tuple[str, str], ...]:
    """The (number column, its index column) pairs of a table, read from the index columns' defaults."""
    return tuple(
        (column.default.arg.source, column.key)
        for column in table.columns
        if isinstance(column.default, ColumnDefault) and isinstance(column.default.arg, BlindIndex)
    )


def sealed_nonempty(column: ColumnElement[Any]) -> ColumnElement[bool]:
    """Whether an encrypted column holds more than "" (in SQL, without the key): by the sealed length.

    A sealed "" is the prefix and the base64 of nonce and tag only, which ends in "==" (28 bytes);
    one or two more bytes have the same length but less padding, more are longer.
    """
    stored = type_coerce(column, Text)
    return or_(
        func.length(stored) != EMPTY_SEALED_LENGTH,
        func.substr(stored, EMPTY_SEALED_LENGTH - 1, 2) != "==",
    )


def encrypted_columns(table: Table) -> list[Column[Any]]:
    """The columns of a table stored encrypted."""
    return [column for column in table.columns if isinstance(column.type, Encrypted)]
