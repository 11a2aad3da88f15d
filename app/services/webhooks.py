"""Outbound webhooks: every incident change is POSTed, signed, to each subscription's URL.

A change writes one `webhook_deliveries` row per active subscription in the change's own
transaction (`emit`), so a change is never lost and never told without having happened. A
deliverer (one per process, in any number of replicas) claims due rows atomically as the SMS
outbox does (FOR UPDATE SKIP LOCKED on PostgreSQL, a claim token and a lease), POSTs each and
records the answer. A delivery is due only once every earlier change of the same incident for
the same subscription was delivered: a receiver learns of K42's changes in the order they
happened, and a receiver failing on K42 holds back K42 alone. A failed attempt (any answer but
2xx, a timeout, a refused connection) is retried with capped exponential back-off, for ever: a
delivery is never dropped. Delivery is at least once (a deliverer that dies between the POST and
recording it leaves the row to be sent again when its lease ends): receivers deduplicate by
`X-Kengele-Delivery`.

The body is signed `X-Kengele-Signature: sha256=<hex>`, the HMAC-SHA256 of the raw body under the
subscription's secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from app.db import per_transaction, utcnow
from app.enums import AuditAction, AuditEntity, DeliveryState, WebhookEvent
from app.metrics import WEBHOOK_DELIVERIES, WEBHOOK_PENDING
from app.models import AuditLog, Incident, Webhook, WebhookDelivery
from app.schemas import IncidentPublic, for_viewer
from app.services.worker import Pass, Signals, Worker

log = logging.getLogger("kengele.webhooks")

SIGNATURE_HEADER = "X-Kengele-Signature"
EVENT_HEADER = "X-Kengele-Event"
DELIVERY_HEADER = "X-Kengele-Delivery"
MAX_URL = 2000
MIN_SECRET = 16
USER_AGENT = "Kengele-Webhooks/1"
# Addresses that answer as cloud metadata services outside the link-local range (AWS's IPv6 one,
# Alibaba's): a receiver is never there, and whoever reaches them from here reads our credentials.
METADATA = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Invalid(ValueError):
    """A subscription that cannot be registered; the message starts with the field at fault."""


class Refused(ValueError):
    """A delivery not attempted: the URL resolves to an address no delivery ever goes to."""


# -- where a delivery may go ---------------------------------------------------------------------
def forbidden(ip: IPAddress) -> str | None:
    """Say why no delivery goes to this address, or None when one may.

    Link-local (169.254.169.254, where cloud metadata services answer), metadata, unspecified,
    multicast and reserved addresses are refused everywhere: no receiver lives there, and a
    request to them from inside our network is the classic server-side request forgery.
    Private networks (10/8, 192.168/16, ...) are allowed: an integration on the same private
    network as Kengele is an ordinary deployment, the admins who register URLs are trusted with
    the roster already, and a delivery's answer is never shown back beyond its status code.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:  # (::1 lies in a range Python also calls reserved)
        return None
    if ip in METADATA or ip.is_link_local:
        return "a link-local or cloud metadata address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    return None


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Tell whether a URL's host is this machine: localhost, or a loopback address."""
    ip = _literal_ip(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip is not None:
        return ip.is_loopback
    return host == "localhost" or host.endswith(".localhost")


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


def check_url(*, url: str, production: bool, own_url: str) -> str:
    """Return a subscription's URL once it may be registered; raise Invalid naming `url` otherwise.

    Names are not resolved here: what a name points at may change after registration, so every
    delivery resolves it again, refuses a forbidden address (`forbidden`) and connects to the
    address it checked (`Deliverer.target`), never to a second resolution.
    """
    url = url.strip()
    if not url:
        raise Invalid("url: required")
    if len(url) > MAX_URL:
        raise Invalid(f"url: longer than {MAX_URL} characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Invalid("url: must start with http:// or https://")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        raise Invalid("url: the port is not a number from 1 to 65535") from None
    if not host:
        raise Invalid("url: has no host")
    if parts.username is not None or parts.password is not None:
        # It would be listed to every admin and logged by proxies; the signature is the credential.
        raise Invalid("url: must not carry a user name or password")
    if any(c.isspace() for c in url):
        raise Invalid("url: must not contain spaces")
    ip = _literal_ip(host)
    why = forbidden(ip) if ip is not None else None
    if why is not None:
        raise Invalid(f"url: {host} is {why}; deliveries never go there")
    if production and scheme == "http" and not is_loopback(host):
        # A plain-http body crosses networks readable and alterable; only this machine is spared.
        raise Invalid("url: plain http is refused in production except to loopback; use https")
    own = urlsplit(own_url)
    if host == (own.hostname or "").lower() and _port(scheme, port) == _port(own.scheme, own.port):
        # Kengele POSTing to itself: at best a loop of refusals, at worst one of its own webhooks.
        raise Invalid("url: points at Kengele itself (KENGELE_PUBLIC_URL)")
    return url


# -- subscriptions -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Created:
    """A new subscription, and its secret when Kengele made it up (shown this once, never again)."""

    webhook: Webhook
    secret: str | None


def create(
    *,
    session: Session,
    url: str,
    secret: str | None,
    description: str,
    actor: str,
    production: bool,
    own_url: str,
    now: datetime,
) -> Created:
    """Register a URL for every incident change; make up its secret when none is given."""
    url = check_url(url=url, production=production, own_url=own_url)
    if secret is not None and len(secret) < MIN_SECRET:
        raise Invalid(f"secret: at least {MIN_SECRET} characters (or leave it out to have one made)")
    made = None if secret is not None else secrets.token_urlsafe(32)
    webhook = Webhook(
        url=url,
        secret=secret if secret is not None else made,
        description=description.strip(),
        active=True,
        created_by=actor,
        created_at=now,
    )
    session.add(webhook)
    session.flush()
    _audit(session, actor, AuditAction.WEBHOOK_CREATE, webhook, now, generated_secret=made is not None)
    return Created(webhook, made)


def subscriptions(*, session: Session) -> Sequence[Webhook]:
    """Every subscription ever registered, oldest first (disabled ones too)."""
    return session.scalars(select(Webhook).order_by(Webhook.id)).all()


def disable(*, session: Session, webhook: Webhook, actor: str, now: datetime) -> Webhook:
    """Stop delivering to a subscription; its undelivered changes stay, unsent, in the outbox."""
    if webhook.active:
        webhook.active, webhook.disabled_at = False, now
        _audit(session, actor, AuditAction.WEBHOOK_DISABLE, webhook, now)
    return webhook


def _audit(
    session: Session, actor: str, action: AuditAction, webhook: Webhook, now: datetime, **details: object
) -> None:
    # The URL's scheme and host only: a path or query may hold the receiver's own token.
    parts = urlsplit(webhook.url)
    session.add(
        AuditLog(
            actor=actor,
            action=action,
            entity=AuditEntity.WEBHOOK,
            entity_id=str(webhook.id),
            details={"url": f"{parts.scheme}://{parts.netloc}", **details},
            at=now,
        )
    )


# -- queueing a change ---------------------------------------------------------------------------
_ACTIVE = select(Webhook.id).where(Webhook.active.is_(True)).order_by(Webhook.id)


def emit(*, session: Session, incident: Incident, event: WebhookEvent, now: datetime) -> int:
    """Queue an incident change for every active subscription, in the change's transaction; how many."""
    targets = per_transaction(session, "kengele.webhooks", lambda: session.scalars(_ACTIVE).all())
    if not targets:
        return 0
    session.flush()  # the change is written, and its incident row locked, before it is queued
    if session.connection().dialect.name == "postgresql":
        # Held to the commit: two changes of one incident queue their rows in the order they
        # commit, so a deliverer never sees a later change's row before an earlier one's.
        session.execute(select(Incident.id).where(Incident.id == incident.id).with_for_update())
    # The masked view (incident_view without `full`): no phone number, no reporter.
    payload = for_viewer(IncidentPublic.model_validate(incident)).model_dump(mode="json")
    rows = [
        {
            "subscription_id": target,
            "incident_id": incident.id,
            "event": str(event),
            "payload": payload,
            "state": str(DeliveryState.PENDING),
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        for target in targets
    ]
    session.execute(insert(WebhookDelivery), rows)
    return len(rows)


# -- delivering ----------------------------------------------------------------------------------
def sign(secret: str, body: bytes) -> str:
    """The signature header's value of a body: `sha256=` and the hex HMAC-SHA256 under `secret`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def body_of(
    *, delivery_id: int, event: str, occurred_at: datetime, sent_at: datetime, incident: Any
) -> bytes:
    """The JSON a receiver gets for one delivery attempt."""
    document = {
        "event": event,
        "id": delivery_id,
        "occurred_at": occurred_at.isoformat(),
        "sent_at": sent_at.isoformat(),
        "incident": incident,
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def retry_delay(*, attempts: int, base: float, cap: float) -> timedelta:
    """Back-off after the `attempts`-th failed try: base * 2^(attempts-1), capped, with jitter."""
    raw = min(cap, base * (2 ** min(max(attempts - 1, 0), 30)))
    return timedelta(seconds=raw * (0.5 + random.random()))


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed delivery: what the deliverer needs to POST it."""

    id: int
    subscription_id: int
    incident_id: int
    event: str
    payload: Any
    attempts: int
    created_at: datetime
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST did."""

    id: int
    delivered: bool
    attempts: int
    outcome: str  # WEBHOOK_DELIVERIES' label
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """Where one POST goes: the URL with its host replaced by the address checked, and its Host."""

    url: str
    host: str  # the Host header: the URL's own netloc
    sni: str | None  # the TLS server name (and certificate name) for https


_D = cast(Table, WebhookDelivery.__table__)
_EARLIER = aliased(WebhookDelivery)
_WAITING = (
    select(_EARLIER.id)
    .where(
        _EARLIER.subscription_id == _D.c.subscription_id,
        _EARLIER.incident_id == _D.c.incident_id,
        _EARLIER.state != DeliveryState.DELIVERED,
        _EARLIER.id < _D.c.id,
    )
    .exists()
)
_DUE = or_(
    and_(_D.c.state == DeliveryState.PENDING, _D.c.next_attempt_at <= bindparam("now")),
    and_(_D.c.state == DeliveryState.DELIVERING, _D.c.claimed_until < bindparam("now")),
)
_DUE_IDS = (
    select(_D.c.id)
    .where(
        _D.c.state != DeliveryState.DELIVERED,
        _DUE,
        _D.c.subscription_id.in_(select(Webhook.id).where(Webhook.active.is_(True))),
        ~_WAITING,
    )
    .order_by(_D.c.id)
    .limit(bindparam("limit"))
)
_DUE_IDS_SKIP_LOCKED = _DUE_IDS.with_for_update(skip_locked=True, of=_D)
_CLAIM = (
    update(_D)
    .where(_D.c.id.in_(bindparam("ids", expanding=True)), _DUE)
    .values(state=DeliveryState.DELIVERING, claim_token=bindparam("token"), claimed_until=bindparam("until"))
    .returning(
        _D.c.id,
        _D.c.subscription_id,
        _D.c.incident_id,
        _D.c.event,
        _D.c.payload,
        _D.c.attempts,
        _D.c.created_at,
    )
)
_SUBSCRIPTIONS = select(Webhook.id, Webhook.url, Webhook.secret).where(
    Webhook.id.in_(bindparam("ids", expanding=True))
)
_RECORD = (
    update(_D)
    .where(_D.c.id == bindparam("b_id"), _D.c.claim_token == bindparam("b_token"))
    .values(
        state=bindparam("b_state"),
        attempts=bindparam("b_attempts"),
        next_attempt_at=bindparam("b_next"),
        delivered_at=bindparam("b_delivered_at"),
        response_status=bindparam("b_status"),
        last_error=bindparam("b_error"),
        claim_token=None,
        claimed_until=None,
    )
)


def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses a host name stands for now (a literal address: itself)."""
    ip = _literal_ip(host)
    if ip is not None:
        return [ip]
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))


class Deliverer(Worker):
    """Claims due webhook deliveries and POSTs each, signed; records what the receiver answered."""

    name = "webhooks"

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        signals: Signals,
        timeout: float = 10.0,
        backoff_base: float = 2.0,
        backoff_max: float = 300.0,
        lease: float = 60.0,
        poll: float = 1.0,
        concurrency: int = 4,
        clock: Callable[[], datetime] = utcnow,
        resolver: Callable[[str, int], list[IPAddress]] = resolve,
    ) -> None:
        super().__init__(signals=signals, every=poll, factory=factory)
        self.timeout = timeout
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.lease = timedelta(seconds=lease)
        self.clock = clock
        self.resolver = resolver
        # Claim no more than can be POSTed, at worst, well within the lease.
        self.claim_limit = max(1, min(64, int(concurrency * lease / (timeout * 2))))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kengele-webhook")
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        """The HTTP client of every POST, made at the first one (a runtime that never delivers has none)."""
        if self._client is None:
            # No proxy from the environment: it would resolve the name itself, past `target`'s check.
            # No redirects: a 3xx is a failed attempt, not an invitation to POST somewhere unchecked.
            self._client = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
        return self._client

    def stop(self) -> None:
        """Stop after the pass under way; the POSTs in flight finish."""
        super().stop()
        self._pool.shutdown(wait=True, cancel_futures=False)
        if self._client is not None:
            self._client.close()

    def step(self) -> Pass:
        """Deliver what is due; at once again when something was (the next change of an incident)."""
        return Pass.AGAIN if self.run_once() else Pass.IDLE

    def run_once(self) -> int:
        """Claim the due deliveries, POST them, record the answers; how many were attempted."""
        token = str(uuid.uuid4())
        claimed = self.claim(token)
        WEBHOOK_PENDING.set(len(claimed))
        if not claimed:
            return 0
        _ = self.client  # made here, once, not by two sending threads at a time
        attempts = list(self._pool.map(self.attempt, claimed))
        self.record(token, attempts)
        return len(claimed)

    def claim(self, token: str) -> list[Claimed]:
        """Claim the first undelivered change of each incident of each active subscription, if due."""
        now = self.clock()
        with self.transaction() as session:
            conn = session.connection()
            query = _DUE_IDS_SKIP_LOCKED if conn.dialect.name == "postgresql" else _DUE_IDS
            ids = list(conn.execute(query, {"now": now, "limit": self.claim_limit}).scalars())
            if not ids:
                return []
            rows = conn.execute(
                _CLAIM, {"ids": ids, "now": now, "token": token, "until": now + self.lease}
            ).all()
            wanted = sorted({r.subscription_id for r in rows})
            subs = {s.id: s for s in conn.execute(_SUBSCRIPTIONS, {"ids": wanted})} if wanted else {}
        return [
            Claimed(
                id=r.id,
                subscription_id=r.subscription_id,
                incident_id=r.incident_id,
                event=r.event,
                payload=r.payload,
                attempts=r.attempts,
                created_at=r.created_at,
                url=subs[r.subscription_id].url,
                secret=subs[r.subscription_id].secret,
            )
            for r in sorted(rows, key=lambda r: r.id)
        ]

    def target(self, url: str) -> Target:
        """Resolve a URL's host once, refuse a forbidden address, and point the POST at the one checked.

        Connecting to the checked address (not resolving again) is what keeps a name that changes
        its answer between the check and the request (DNS rebinding) from reaching a forbidden one.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        scheme = parts.scheme.lower()
        try:
            addresses = self.resolver(host, _port(scheme, parts.port))
        except OSError as exc:
            raise ConnectionError(f"cannot resolve the host: {exc.strerror or exc}") from None
        if not addresses:
            raise ConnectionError("the host resolves to no address")
        for ip in addresses:
            why = forbidden(ip)
            if why is not None:
                raise Refused(f"the host resolves to {why}")
        pinned = httpx.URL(url).copy_with(host=str(addresses[0]))
        return Target(str(pinned), parts.netloc, host if scheme == "https" else None)

    def attempt(self, claimed: Claimed) -> Attempt:
        """POST one delivery once; say what happened."""
        tries = claimed.attempts + 1
        body = body_of(
            delivery_id=claimed.id,
            event=claimed.event,
            occurred_at=claimed.created_at,
            sent_at=self.clock(),
            incident=claimed.payload,
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_HEADER: claimed.event,
            DELIVERY_HEADER: str(claimed.id),
            SIGNATURE_HEADER: sign(claimed.secret, body),
        }
        try:
            target = self.target(claimed.url)
            headers["Host"] = target.host
            extensions = {"sni_hostname": target.sni} if target.sni else None
            response = self.client.post(target.url, content=body, headers=headers, extensions=extensions)
        except Refused as exc:
            return self._failed(claimed, tries, "refused", str(exc))
        except httpx.TimeoutException:
            return self._failed(claimed, tries, "timeout", f"no answer within {self.timeout:g} s")
        except (httpx.TransportError, ConnectionError, OSError) as exc:
            return self._failed(claimed, tries, "unreachable", f"{type(exc).__name__}: {exc}"[:200])
        if 200 <= response.status_code < 300:
            WEBHOOK_DELIVERIES.labels(outcome="delivered").inc()
            return Attempt(claimed.id, True, tries, "delivered", status=response.status_code)
        return self._failed(
            claimed, tries, "http_error", f"HTTP {response.status_code}", response.status_code
        )

    def _failed(
        self, claimed: Claimed, tries: int, outcome: str, error: str, status: int | None = None
    ) -> Attempt:
        WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()
        # The subscription by id, never its URL: a path or query may hold the receiver's token.
        log.warning(
            "webhook delivery failed; will retry",
            extra={
                "delivery": claimed.id,
                "subscription": claimed.subscription_id,
                "incident": claimed.incident_id,
                "attempts": tries,
                "error": error,
            },
        )
        return Attempt(claimed.id, False, tries, outcome, status=status, error=error)

    def record(self, token: str, attempts: Sequence[Attempt]) -> None:
        """Write what each attempt did, on the rows this deliverer still holds (its claim token)."""
        now = self.clock()
        params = [
            {
                "b_id": a.id,
                "b_token": token,
                "b_state": DeliveryState.DELIVERED if a.delivered else DeliveryState.PENDING,
                "b_attempts": a.attempts,
                "b_next": now
                if a.delivered
                else now + retry_delay(attempts=a.attempts, base=self.backoff_base, cap=self.backoff_max),
                "b_delivered_at": now if a.delivered else None,
                "b_status": a.status,
                "b_error": a.error,
            }
            for a in attempts
        ]
        with self.transaction() as session:
            session.connection().execute(_RECORD, params)
