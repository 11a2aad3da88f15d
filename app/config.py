"""Settings: one pydantic-settings class, read from the environment and `.env`, never at import time."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.services.limits import Limits, ReplyCountries, parse_countries, parse_limit
from gateways import PROVIDERS
from keywords.grammar import GRAMMAR_DIR, GrammarError, load_all

# Values people paste from examples; refused outside development so no deployment runs with them.
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "xxx", "test", "token", "example"}
# Production refuses a token or key shorter than this: a guessable one lets anyone in.
MIN_SECRET_LENGTH = 32


def weak_secret(value: str) -> str | None:
    """Say why a secret cannot be used in production, or None if it can."""
    if value.lower() in PLACEHOLDER_SECRETS:
        return "is a placeholder"
    if len(value) < MIN_SECRET_LENGTH:
        return f"is too short ({len(value)} of the {MIN_SECRET_LENGTH} characters needed)"
    if len(set(value)) == 1:
        return "is one character repeated"
    return None


T = TypeVar("T", int, float)

# SMS per second where KENGELE_SEND_RATE does not say: a Twilio long code sends one a second;
# Africa's Talking is not documented as slower than this. The console texts no one: not paced.
DEFAULT_SEND_RATES: dict[str, float] = {"twilio": 1.0, "africastalking": 10.0}


def _per_gateway(setting: str, value: str, kind: Callable[[str], T], unit: str) -> dict[str, T]:
    """Read "5" or "twilio=1,africastalking=10" (a bare number: every gateway, key "*")."""
    found: dict[str, T] = {}
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        name, _, number = part.rpartition("=")
        name = name.strip().lower() or "*"
        if name != "*" and name not in PROVIDERS:
            raise ValueError(f"{setting}: unknown gateway {name!r}; known: {', '.join(PROVIDERS)}")
        if name in found:
            raise ValueError(f"{setting}: {name} is given twice")
        try:
            found[name] = kind(number.strip())
        except ValueError:
            raise ValueError(f"{setting}: {part!r} is not {unit} (e.g. twilio=1)") from None
        if not math.isfinite(found[name]):
            raise ValueError(f"{setting}: {part!r} is not {unit}")
    return found


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Everything Kengele reads from its environment (see CONTRACT.md for the names)."""

    model_config = SettingsConfigDict(
        env_prefix="KENGELE_", env_file=".env", extra="ignore", populate_by_name=True
    )

    env: Literal["development", "production", "test"] = "development"
    database_url: str = "sqlite:///./kengele.db"
    gateway: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["console"])
    public_url: str = "http://127.0.0.1:8000"
    default_region: str = "CD"
    timezone: str = "Africa/Lubumbashi"
    default_language: str = "fr"
    # A folder of grammar files (xx.toml) that add languages or replace the package's (same name).
    grammars_dir: Path | None = None
    admin_token: SecretStr | None = None
    ack_timeout: int = Field(600, ge=1)
    dedup_window: int = Field(21600, ge=1)
    dedup_radius_km: float = Field(10.0, gt=0)
    # Days after which messages lose their texts and the numbers of unregistered senders (retention).
    retention_days: int = Field(90, ge=1)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    # The dashboard's map tiles ({z}/{x}/{y}; empty: no tiles, the markers and place names on a
    # plain background). Every officer's browser asks this server for the tiles of what it shows:
    # a network that must not tell a tile server where it looks runs its own and names it here.
    map_tiles: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    map_attribution: str = "© OpenStreetMap contributors"
    # Who CAP alerts (GET /api/v1/incidents/{id}/cap) say they come from; unset: KENGELE_PUBLIC_URL's host.
    cap_sender: str | None = None

    # Forwards carry the reporter's phone number only where a network decides officers need it.
    forward_reporter_phone: bool = False

    # Replies to senders who are not on the roster: a reply on a seized phone can endanger its owner.
    reply_unregistered: bool = True

    # Cost control (app/services/limits.py). Replies per sender, COUNT/SECONDS in a sliding window;
    # countries replies go to (ISO alpha-2, comma-separated; empty: the default region and the
    # countries of the roster's numbers and the gazetteer's places); new incidents of one sender
    # not vouched for forwarded one by one, beyond which officers get one notice instead.
    reply_limit: str = "5/3600"
    reply_countries: str = ""
    flood_limit: str = "3/3600"

    # Proxies whose X-Forwarded-For and X-Forwarded-Proto a replica believes: IP addresses or
    # networks, comma-separated, or `*` (any peer: only where nothing but the proxy reaches the
    # replicas). Unset: the headers are ignored, and the proxy's address is the caller's. The
    # sign-in lock-out counts failures per caller address. Webhook signatures never use them.
    forwarded_allow_ips: str = ""

    # PostgreSQL connections each process may hold: pool_size kept open, max_overflow more opened
    # under load and closed after. Every replica, uvicorn worker and `kengele worker` has its own
    # pool; their sum must stay under the server's max_connections (docs/scaling.md). SQLite: one.
    db_pool_size: int = Field(10, ge=1, le=100)
    db_max_overflow: int = Field(10, ge=0, le=100)

    # Durability of SQLite commits: FULL survives power loss, NORMAL only process crashes.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    # Seconds a process owns an inbound message it stored before another replica may process it.
    processing_lease: float = Field(30.0, gt=0)

    # Outbox dispatcher.
    send_timeout: float = Field(10.0, gt=0)
    send_max_attempts: int = Field(3, ge=1, description="tries on one gateway before the next")
    send_backoff_base: float = Field(2.0, ge=0)
    send_backoff_max: float = Field(300.0, ge=0)
    dispatch_concurrency: int = Field(4, ge=1, le=64)
    dispatch_poll: float = Field(1.0, gt=0)
    # Check-ins: a cron line (minute hour day month weekday, in KENGELE_TIMEZONE) for every area,
    # and per-area overrides "Djugu=0 7 * * *; Beni=30 8 * * mon-fri". A focal point who misses
    # `silent_after` rounds in a row is flagged silent.
    checkin_schedule: str = "0 8 * * *"
    checkin_schedules: str = ""
    silent_after: int = Field(2, ge=1)
    # Seconds of inactivity after which a USSD session is over (Africa's Talking ends them sooner).
    ussd_session_timeout: int = Field(180, ge=10)

    # How often each process looks for escalation steps that fell due and failed forwards.
    escalation_poll: float = Field(5.0, gt=0)
    send_lease: float = Field(120.0, gt=0, description="seconds a dispatcher owns a row it sends")
    # Outbound webhooks (app/services/webhooks.py): seconds per request, the back-off of a failed
    # delivery (doubling from base, capped: a receiver down for a day is retried every few minutes,
    # never given up on), how long a deliverer owns a claimed delivery, and how often it looks.
    webhook_timeout: float = Field(10.0, gt=0)
    webhook_backoff_base: float = Field(2.0, gt=0)  # 0 would retry a failing receiver in a busy loop
    webhook_backoff_max: float = Field(300.0, ge=0)
    webhook_lease: float = Field(60.0, gt=0)
    webhook_poll: float = Field(1.0, gt=0)
    webhook_concurrency: int = Field(4, ge=1, le=32)
    # SMS per second per gateway, "twilio=1,africastalking=10"; a bare number is every gateway's.
    # Unnamed gateways get DEFAULT_SEND_RATES; the console is not paced unless named.
    send_rate: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    # SMS per day per gateway, "500" (each gateway) or "twilio=500,africastalking=2000"; unset: no limit.
    daily_sms_budget: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)

    twilio_account_sid: str | None = Field(None, validation_alias=_alias("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_alias("TWILIO_AUTH_TOKEN"))
    twilio_from: str | None = Field(None, validation_alias=_alias("TWILIO_FROM"))
    # Accounts that sign webhooks with a SharedKey (X-Twilio-Webhooks-Signature-Settings) use it.
    twilio_webhook_key: SecretStr | None = None
    # Where the SDK sends; only changed to point it at a local fake or a regional edge.
    twilio_api_base: str | None = None

    at_username: str | None = Field(None, validation_alias=_alias("AT_USERNAME"))
    at_api_key: SecretStr | None = Field(None, validation_alias=_alias("AT_API_KEY"))
    at_sender: str | None = Field(None, validation_alias=_alias("AT_SENDER"))
    at_webhook_secret: SecretStr | None = None
    at_api_base: str | None = None

    # -- keys sealing phone numbers and provider forms at rest (app/crypto.py) --------------------
    # KENGELE_SECRET_KEY is the newest key; KENGELE_SECRET_KEYS lists more, newest first, whose rows
    # stay readable until `kengele keys rotate` moves them to the newest. Development without
    # either makes a key file in the data folder; production and test refuse to start.
    secret_key: SecretStr | None = None
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    @field_validator("secret_key", mode="before")
    @classmethod
    def _secret_key_empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_secret_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _secret_key_outside_development(self) -> Settings:
        if self.env != "development" and not self.key_secrets:
            raise ValueError(
                f"KENGELE_SECRET_KEY is required in {self.env}: phone numbers are stored encrypted "
                "under it (`kengele keys generate` prints a new one)"
            )
        return self

    @property
    def key_secrets(self) -> list[str]:
        """The configured key secrets, newest first."""
        given = [self.secret_key, *self.secret_keys]
        return list(dict.fromkeys(s.get_secret_value().strip() for s in given if s is not None))

    @field_validator(
        "admin_token",
        "twilio_account_sid",
        "twilio_auth_token",
        "twilio_from",
        "twilio_webhook_key",
        "twilio_api_base",
        "at_username",
        "at_api_key",
        "at_sender",
        "at_webhook_secret",
        "at_api_base",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("gateway", mode="before")
    @classmethod
    def _split_gateways(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("gateway")
    @classmethod
    def _known_gateways(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in PROVIDERS]
        if unknown:
            raise ValueError(f"unknown gateway {unknown[0]!r}; known: {', '.join(PROVIDERS)}")
        if not value:
            raise ValueError("at least one gateway is needed")
        return value

    @field_validator("send_rate", mode="before")
    @classmethod
    def _parse_send_rate(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        rates = _per_gateway("KENGELE_SEND_RATE", value, float, "SMS per second")
        bad = [name for name, rate in rates.items() if not 0 < rate <= 1000]
        if bad:
            raise ValueError(
                f"KENGELE_SEND_RATE: {bad[0]}: must be more than 0 and at most 1000 SMS per second"
            )
        return rates

    @field_validator("daily_sms_budget", mode="before")
    @classmethod
    def _parse_budget(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        budgets = _per_gateway("KENGELE_DAILY_SMS_BUDGET", value, int, "a whole number of SMS")
        bad = [name for name, budget in budgets.items() if budget < 1]
        if bad:
            raise ValueError(
                f"KENGELE_DAILY_SMS_BUDGET: {bad[0]}: must be at least 1 (unset it for no limit)"
            )
        return budgets

    @property
    def send_rates(self) -> dict[str, float | None]:
        """SMS per second for each configured gateway (None: not paced)."""
        every = self.send_rate.get("*")
        return {
            name: self.send_rate.get(name, every if every is not None else DEFAULT_SEND_RATES.get(name))
            for name in self.gateway
        }

    @property
    def sms_budgets(self) -> dict[str, int | None]:
        """SMS per day for each configured gateway (None: no limit)."""
        every = self.daily_sms_budget.get("*")
        return {name: self.daily_sms_budget.get(name, every) for name in self.gateway}

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not an ISO country phonenumbers knows")
        return value

    @field_validator("reply_limit", "flood_limit")
    @classmethod
    def _limit(cls, value: str, info: ValidationInfo) -> str:
        parse_limit(value, setting=f"KENGELE_{(info.field_name or '').upper()}")
        return value.strip()

    @field_validator("reply_countries")
    @classmethod
    def _countries(cls, value: str) -> str:
        return ",".join(sorted(parse_countries(value, setting="KENGELE_REPLY_COUNTRIES")))

    @property
    def limits(self) -> Limits:
        """The cost bounds these settings give (the derived countries are read from the database)."""
        configured = parse_countries(self.reply_countries, setting="KENGELE_REPLY_COUNTRIES")
        return Limits(
            reply=parse_limit(self.reply_limit, setting="KENGELE_REPLY_LIMIT"),
            flood=parse_limit(self.flood_limit, setting="KENGELE_FLOOD_LIMIT"),
            countries=ReplyCountries(configured=configured or None, region=self.default_region),
        )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("grammars_dir")
    @classmethod
    def _grammars_dir(cls, value: Path | None) -> Path | None:
        # Checked here, so that a bad file stops every command and the service before it starts.
        if value is None:
            return None
        value = value.expanduser().resolve()
        if not value.is_dir():
            raise ValueError(f"KENGELE_GRAMMARS_DIR: {value}: no such folder")
        if not any(value.glob("*.toml")):
            raise ValueError(f"KENGELE_GRAMMARS_DIR: {value}: holds no grammar file (xx.toml)")
        try:
            load_all(GRAMMAR_DIR, value)
        except GrammarError as exc:
            raise ValueError(f"KENGELE_GRAMMARS_DIR: {exc.path}: {exc.key}: {exc.reason}") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _forwarded_allow_ips(cls, value: str) -> str:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        for part in parts:
            if part == "*":
                continue
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(
                    f"{part!r} is not an IP address or network (e.g. 10.0.0.5, 172.16.0.0/12, or *)"
                ) from None
        return ",".join(parts)

    @field_validator("map_tiles")
    @classmethod
    def _map_tiles(cls, value: str) -> str:
        value = value.strip()
        if value and not (value.startswith(("http://", "https://")) and "{z}" in value and "{x}" in value):
            raise ValueError("a tile URL such as https://tile.example.org/{z}/{x}/{y}.png, or empty for none")
        return value

    @field_validator("cap_sender", mode="before")
    @classmethod
    def _cap_sender(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()
        # CAP 1.2 forbids these in <sender>, and the sender is a part of every <identifier> too.
        if any(ch.isspace() or ch in ",<&" for ch in value):
            raise ValueError(
                "must hold no spaces, commas, '<' or '&' (CAP 1.2 <sender>), e.g. alerts.example.org"
            )
        return value or None

    @property
    def cap_origin(self) -> str:
        """The CAP sender: KENGELE_CAP_SENDER, else the host KENGELE_PUBLIC_URL names."""
        return self.cap_sender or urlsplit(self.public_url).hostname or "kengele"

    @field_validator("at_webhook_secret")
    @classmethod
    def _at_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ("/" in value.get_secret_value() or not value.get_secret_value()):
            raise ValueError("must be a non-empty path segment without '/'")
        return value

    @model_validator(mode="after")
    def _retention_covers_dedup(self) -> Settings:
        # Retention removes the senders that dedup's "same sender counted once" compares.
        if self.retention_days * 86400 <= self.dedup_window:
            raise ValueError("KENGELE_RETENTION_DAYS must be longer than KENGELE_DEDUP_WINDOW")
        return self

    @model_validator(mode="after")
    def _production_secrets(self) -> Settings:
        if self.env != "production":
            return self
        secrets = {
            "KENGELE_ADMIN_TOKEN": self.admin_token,
            "TWILIO_AUTH_TOKEN": self.twilio_auth_token,
            "KENGELE_TWILIO_WEBHOOK_KEY": self.twilio_webhook_key,
            "AT_API_KEY": self.at_api_key,
            "KENGELE_AT_WEBHOOK_SECRET": self.at_webhook_secret,
        }
        for name, secret in secrets.items():
            why = weak_secret(secret.get_secret_value()) if secret is not None else None
            if why is not None:
                raise ValueError(f"{name} {why}; set a real secret in production")
        # The newest key only: an old, weak key may stay listed while `kengele keys rotate` retires it.
        why = weak_secret(self.key_secrets[0]) if self.key_secrets else None
        if why is not None:
            name = "KENGELE_SECRET_KEY" if self.secret_key else "KENGELE_SECRET_KEYS"
            raise ValueError(f"{name} {why}; `kengele keys generate` prints a real key")
        for name in self.gateway:
            # A provider we send through must be able to tell us what became of its SMS.
            provider = PROVIDERS[name]
            if provider.webhooks and provider.verifier(self) is None:
                raise ValueError(
                    f"{name} sends here, but its webhooks cannot be verified in production: "
                    f"set {provider.verification_setting}"
                )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
