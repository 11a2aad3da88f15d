"""Geotagging and deduplication at scale.

- place resolution against 150,000 GeoNames places (the built-in data, loaded from the places
  table as the service loads it): p50 and p99 per message;
- the cost of deduplicating one report with 1,000 and with 1,000,000 alerts stored (SQLite);
- the resident memory of `kengele serve` once that gazetteer is loaded.

Every row is written through the app's own builders (intake's `message_row` and `store_batch`,
the models' defaults for incidents and alerts), so a migration cannot leave this file behind.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select

from app.db import make_engine, make_sessionmaker, transaction, upgrade
from app.models import Alert, Incident
from app.services import gazetteer
from app.services.dedup import count_report, find_incident, severity
from app.services.geotag import PlaceIndex
from app.services.intake import message_row, store_batch
from bench.common import KEYRING, expect, percentile, reader, scratch
from gateways.base import InboundSms
from tests.server import Server

PLACES = 150_000
CATEGORIES = ("attack", "armed_presence", "looting", "abduction")


def store_places(url: str, rows: list[gazetteer.PlaceRow]) -> None:
    upgrade(url)
    engine = make_engine(url, keyring=KEYRING)
    gazetteer.store(engine, rows)
    engine.dispose()


def typo(name: str, rnd: random.Random) -> str:
    i = rnd.randrange(1, max(2, len(name) - 1))
    return name[:i] + name[i + 1 :] if rnd.random() < 0.5 else name[:i] + "x" + name[i + 1 :]


def resolution(url: str, rows: list[gazetteer.PlaceRow], n: int = 20_000) -> dict[str, float]:
    """Lookups against the index the service builds from the places table at `url`."""
    engine = make_engine(url, keyring=KEYRING)
    started = time.perf_counter()
    with make_sessionmaker(engine)() as session:
        index = PlaceIndex.load(session)
    built = time.perf_counter() - started
    engine.dispose()
    expect(len(index) == len(rows), f"the index holds {len(index)} places of {len(rows)} stored")
    rnd = random.Random(7)
    queries: list[tuple[str, list[str]]] = []
    for _ in range(n):
        place = rows[rnd.randrange(len(rows))].name
        roll = rnd.random()
        if roll < 0.5:
            queries.append(("written", place.lower().split()))
        elif roll < 0.8:
            queries.append(("typo", [typo(place.lower(), rnd)]))
        else:
            queries.append(("nowhere", ["zzqx" + uuid.uuid4().hex[:5]]))  # falls back to home
    samples = []
    found = written = 0
    for kind, words in queries:
        t0 = time.perf_counter()
        where = index.resolve(words, home=(1.9, 30.5))
        samples.append(time.perf_counter() - t0)
        if kind == "written":
            written += 1
            found += where.precision == "place"
    expect(found >= 0.9 * written, f"only {found} of {written} place names written as such were found")
    p50, p99 = percentile(samples, 50) * 1000, percentile(samples, 99) * 1000
    print(f"  place resolution, {len(rows):,} places (index loaded in {built:.1f} s), {n:,} lookups")
    print(f"    p50 {p50:.3f} ms   p99 {p99:.3f} ms   (targets: 0.5 ms, 5 ms)")
    return {"p50_ms": p50, "p99_ms": p99}


def inbound_row(provider: str, message_id: str, sender: str, text: str, at: datetime) -> dict[str, Any]:
    """The messages row intake writes for this SMS, as received at `at`."""
    sms = InboundSms(provider, message_id, sender, None, text, at)
    return message_row(sms, region="CD", now=at, claim_token=None, lease=timedelta(0))


def fill(url: str, alerts: int) -> None:
    """`alerts` reports over four years, 10 per incident, spread over Ituri and North Kivu."""
    engine = make_engine(url, keyring=KEYRING)
    rnd = random.Random(1)
    start = datetime(2022, 1, 1, tzinfo=UTC)
    span = (datetime(2026, 11, 1, tzinfo=UTC) - start).total_seconds()
    batch = 20_000  # a multiple of 10: an incident and its reports are written together
    for base in range(0, alerts, batch):
        messages: list[dict[str, Any]] = []
        incidents: list[dict[str, Any]] = []
        reports: list[dict[str, Any]] = []
        for k in range(base, min(alerts, base + batch)):
            if k % 10 == 0:
                at = start + timedelta(seconds=rnd.random() * span)
                lat, lon = 0.5 + rnd.random() * 2, 29.0 + rnd.random() * 2
                category = rnd.choice(CATEGORIES)
                incident = {
                    "id": k // 10 + 1,
                    "code": f"K{k // 10 + 1}",
                    "category": category,
                    "severity": "low",
                    "status": "closed" if rnd.random() < 0.9 else "open",
                    "lat": lat,
                    "lon": lon,
                    "precision": "place",
                    "first_reported_at": at,
                    "last_reported_at": at,
                    "report_count": 10,
                    "reporter_count": 10,
                    "created_at": at,
                }
                incidents.append(incident)
            sender = f"+24381{k:07d}"
            row = inbound_row("bench", f"b{k}", sender, "A1", at)
            # Processed long ago: no worker would pick these up again.
            row.update(incident_id=incident["id"], processed_at=at, intent="alert", outcome="alert")
            messages.append(row)
            reports.append(
                {
                    "incident_id": incident["id"],
                    "category": category,
                    "severity": "low",
                    "lat": lat,
                    "lon": lon,
                    "precision": "place",
                    "sender": sender,
                    "reported_at": at,
                    "text": "A1",
                    "details": {},
                    "created_at": at,
                }
            )
        with engine.begin() as conn:  # the messages point at their incident: incidents first
            conn.execute(insert(Incident), incidents)
        ids = store_batch(engine, messages)
        expect(None not in ids, "a bench message was taken for a retry of another")
        for report, message_id in zip(reports, ids, strict=True):
            report["message_id"] = message_id
        with engine.begin() as conn:
            conn.execute(insert(Alert), reports)
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(Alert)).scalar_one()
    engine.dispose()
    expect(stored == alerts, f"{stored} alerts stored, {alerts} written")


def dedup_cost(url: str, n: int = 300) -> float:
    """Mean milliseconds to place one new report: find its incident, add it, count it in.

    The message is stored first, as intake does; what is timed is what processing does with it.
    """
    engine = make_engine(url, keyring=KEYRING)
    factory = make_sessionmaker(engine)
    rnd = random.Random(3)
    now = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    samples = []
    joined = 0
    for i in range(n):
        lat, lon = 0.5 + rnd.random() * 2, 29.0 + rnd.random() * 2
        at = now + timedelta(seconds=i)
        sender = f"+2439{i:08d}"
        (message_id,) = store_batch(engine, [inbound_row("bench-new", f"n{i}", sender, "A1", at)])
        expect(message_id is not None, "a new report was taken for a retry")
        with transaction(factory) as session:
            session.connection()  # begin (and take SQLite's write lock) before the clock starts
            t0 = time.perf_counter()
            incident = find_incident(
                session,
                category="attack",
                lat=lat,
                lon=lon,
                sender=sender,
                at=at,
                radius_km=10.0,
                window=timedelta(hours=6),
            )
            if incident is None:
                incident = Incident(
                    category="attack",
                    severity=severity("attack", None, 1),
                    status="open",
                    lat=lat,
                    lon=lon,
                    precision="place",
                    first_reported_at=at,
                    last_reported_at=at,
                    report_count=0,
                    reporter_count=0,
                )
                session.add(incident)
                session.flush()
            else:
                joined += 1
            session.add(
                Alert(
                    message_id=message_id,
                    incident_id=incident.id,
                    category="attack",
                    severity=incident.severity,
                    lat=lat,
                    lon=lon,
                    precision="place",
                    sender=sender,
                    reported_at=at,
                    text="A1",
                    details={},
                )
            )
            count_report(session, incident, sender=sender, at=at, people=None)
            session.flush()
            samples.append(time.perf_counter() - t0)
    with engine.connect() as conn:
        mine = conn.execute(
            select(func.count()).select_from(Alert).where(Alert.reported_at >= now)
        ).scalar_one()
    engine.dispose()
    expect(mine == n, f"{mine} of {n} new reports were stored")
    warm = min(20, n // 4)  # the first reports fill the caches
    return statistics.mean(samples[warm:]) * 1000


def memory(url: str, workdir: Path, wait: float = 60.0) -> float:
    """RSS (MB) of `kengele serve` once it has loaded the gazetteer at `url` (all of it)."""
    server = Server(url, workdir).start()
    db = reader(url)
    try:
        answer = httpx.post(
            server.url + "/webhooks/africastalking/-/sms",
            data={"from": "+243810000001", "text": "A1 Bunia", "id": "m1", "to": "1"},
        )
        expect(answer.status_code == 200, f"the webhook answered {answer.status_code}")
        deadline = time.monotonic() + wait
        alerts = 0
        while not alerts and time.monotonic() < deadline:  # the alert is made once the index is loaded
            time.sleep(0.2)
            with db.connect() as conn:
                alerts = conn.execute(select(func.count()).select_from(Alert)).scalar_one()
        expect(alerts == 1, f"the server made no alert of its report in {wait:.0f} s")
        assert server.proc is not None
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024
    finally:
        db.dispose()
        server.stop()
    return rss


def main(
    places: int = PLACES,
    lookups: int = 20_000,
    sizes: tuple[int, int] = (1_000, 1_000_000),
    reports: int = 300,
) -> dict[str, float]:
    print("geotagging and deduplication")
    rows = gazetteer.read_builtin(None)[:places]
    expect(len(rows) == places, f"the built-in gazetteer has {len(rows)} places, not {places}")
    with scratch("geo") as workdir:
        places_url = f"sqlite:///{workdir / 'places.db'}"
        store_places(places_url, rows)
        out = resolution(places_url, rows, lookups)
        costs = {}
        for size in sizes:
            url = f"sqlite:///{workdir / f'dedup-{size}.db'}"
            upgrade(url)
            t0 = time.perf_counter()
            fill(url, size)
            filled = time.perf_counter() - t0
            costs[size] = dedup_cost(url, reports)
            print(
                f"  dedup of one report with {size:>9,} alerts stored: {costs[size]:.3f} ms"
                f"   (filled in {filled:.1f} s)"
            )
        small, large = sizes
        ratio = costs[large] / costs[small]
        print(f"    ratio {large:,} / {small:,}: {ratio:.2f}   (target: within 2)")
        rss = memory(places_url, workdir)
    print(f"  kengele serve with {places:,} places loaded: RSS {rss:.0f} MB   (target: under 400 MB)")
    return {
        **out,
        f"dedup_{small}_ms": costs[small],
        f"dedup_{large}_ms": costs[large],
        "ratio": ratio,
        "rss_mb": rss,
    }


def smoke() -> dict[str, float]:
    return main(places=3_000, lookups=1_000, sizes=(1_000, 10_000), reports=60)


if __name__ == "__main__":
    main()
