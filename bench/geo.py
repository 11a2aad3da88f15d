"""Geotagging and deduplication at scale.

- place resolution against 150,000 GeoNames places (the built-in data): p50 and p99 per message;
- the cost of deduplicating one report with 1,000 and with 1,000,000 alerts stored (SQLite);
- the resident memory of `kengele serve` once that gazetteer is loaded.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from app.db import make_engine, make_sessionmaker, transaction, upgrade
from app.models import Alert, Incident
from app.services import gazetteer
from app.services.dedup import find_incident, refresh, severity
from app.services.geotag import PlaceIndex, Spot
from tests.server import Server

PLACES = 150_000


def build_index(rows: list[gazetteer.PlaceRow]) -> PlaceIndex:
    spots = [
        Spot(i, r.name, r.lat, r.lon, r.admin1, r.admin2, r.country, r.population or 0)
        for i, r in enumerate(rows)
    ]
    names = [(gazetteer.normalize_name(r.name), i) for i, r in enumerate(rows)]
    for i, r in enumerate(rows):
        names += [(gazetteer.normalize_name(a), i) for a in r.alt_names]
    return PlaceIndex(spots, names)


def typo(name: str, rnd: random.Random) -> str:
    i = rnd.randrange(1, max(2, len(name) - 1))
    return name[:i] + name[i + 1 :] if rnd.random() < 0.5 else name[:i] + "x" + name[i + 1 :]


def resolution(rows: list[gazetteer.PlaceRow], n: int = 20_000) -> dict[str, float]:
    started = time.perf_counter()
    index = build_index(rows)
    built = time.perf_counter() - started
    rnd = random.Random(7)
    queries: list[list[str]] = []
    for _ in range(n):
        place = rows[rnd.randrange(len(rows))].name
        kind = rnd.random()
        if kind < 0.5:
            queries.append(place.lower().split())  # as written
        elif kind < 0.8:
            queries.append([typo(place.lower(), rnd)])  # one typing error
        else:
            queries.append(["zzqx" + uuid.uuid4().hex[:5]])  # not a place: falls back to home
    samples = []
    for words in queries:
        t0 = time.perf_counter()
        index.resolve(words, home=(1.9, 30.5))
        samples.append(time.perf_counter() - t0)
    samples.sort()
    p50, p99 = samples[len(samples) // 2] * 1000, samples[int(len(samples) * 0.99)] * 1000
    print(f"  place resolution, {len(rows):,} places (index built in {built:.1f} s), {n:,} lookups")
    print(f"    p50 {p50:.3f} ms   p99 {p99:.3f} ms   (targets: 0.5 ms, 5 ms)")
    return {"p50_ms": p50, "p99_ms": p99}


def fill(url: str, alerts: int) -> None:
    """`alerts` reports over four years, 10 per incident, spread over Ituri and North Kivu."""
    engine = make_engine(url)
    rnd = random.Random(1)
    start = datetime(2022, 1, 1, tzinfo=UTC)
    span = (datetime(2026, 11, 1, tzinfo=UTC) - start).total_seconds()
    batch = 20_000
    next_id = 1
    for base in range(0, alerts, batch):
        messages, incidents, reports = [], [], []
        for k in range(base, min(alerts, base + batch)):
            if k % 10 == 0:
                at = start + timedelta(seconds=rnd.random() * span)
                lat, lon = 0.5 + rnd.random() * 2, 29.0 + rnd.random() * 2
                category = rnd.choice(["attack", "armed_presence", "looting", "abduction"])
                incident_id = k // 10 + 1
                incidents.append(
                    (
                        incident_id,
                        f"K{incident_id}",
                        category,
                        "low",
                        "closed" if rnd.random() < 0.9 else "open",
                        lat,
                        lon,
                        "place",
                        at.replace(tzinfo=None),
                        at.replace(tzinfo=None),
                        10,
                        10,
                        0,
                        at.replace(tzinfo=None),
                    )
                )
            messages.append(
                (
                    next_id,
                    "inbound",
                    "bench",
                    f"b{next_id}",
                    f"+24381{k:07d}",
                    "A1",
                    "received",
                    at.replace(tzinfo=None),
                )
            )
            reports.append(
                (
                    next_id,
                    incident_id,
                    category,
                    "low",
                    lat,
                    lon,
                    "place",
                    f"+24381{k:07d}",
                    at.replace(tzinfo=None),
                    "A1",
                    "{}",
                    at.replace(tzinfo=None),
                )
            )
            next_id += 1
        with engine.begin() as conn:
            raw = conn.connection.driver_connection
            raw.executemany(
                "INSERT INTO messages (id, direction, provider, provider_message_id, sender, text, status,"
                " created_at, phone_valid, attempts, gateway_index, gateway_attempts)"
                " VALUES (?,?,?,?,?,?,?,?,1,0,0,0)",
                messages,
            )
            raw.executemany(
                "INSERT INTO incidents (id, code, category, severity, status, lat, lon, precision,"
                " first_reported_at, last_reported_at, report_count, reporter_count, escalation_level,"
                " created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                incidents,
            )
            raw.executemany(
                "INSERT INTO alerts (message_id, incident_id, category, severity, lat, lon, precision,"
                " sender, reported_at, text, details, confidence, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,1.0,?)",
                reports,
            )
    engine.dispose()


def dedup_cost(url: str, n: int = 300) -> float:
    """Mean milliseconds to place one new report: find its incident, add it, recount."""
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    rnd = random.Random(3)
    now = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    samples = []
    for i in range(n):
        lat, lon = 0.5 + rnd.random() * 2, 29.0 + rnd.random() * 2
        with transaction(factory) as session:
            conn = session.connection()
            message_id = conn.exec_driver_sql(
                "INSERT INTO messages (direction, provider, provider_message_id, text, status, created_at,"
                " phone_valid, attempts, gateway_index, gateway_attempts) VALUES"
                " ('inbound', 'bench-new', ?, 'A1', 'received', '2026-11-20', 1, 0, 0, 0) RETURNING id",
                (f"n{i}-{uuid.uuid4().hex}",),
            ).scalar_one()
            t0 = time.perf_counter()
            at = now + timedelta(seconds=i)
            incident = find_incident(
                session,
                category="attack",
                lat=lat,
                lon=lon,
                sender=f"+2439{i:08d}",
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
                )
                session.add(incident)
                session.flush()
            session.add(
                Alert(
                    message_id=message_id,
                    incident_id=incident.id,
                    category="attack",
                    severity="high",
                    lat=lat,
                    lon=lon,
                    precision="place",
                    sender=f"+2439{i:08d}",
                    reported_at=at,
                    text="A1",
                    details={},
                )
            )
            refresh(session, incident)
            session.flush()
            samples.append(time.perf_counter() - t0)
    engine.dispose()
    return statistics.mean(samples[20:]) * 1000


def memory() -> float:
    """RSS (MB) of `kengele serve` after it has loaded the built-in gazetteer (all of it)."""
    workdir = Path(tempfile.mkdtemp(prefix="kengele-bench-geo-"))
    url = f"sqlite:///{workdir / 'geo.db'}"
    upgrade(url)
    engine = make_engine(url)
    gazetteer.store(engine, gazetteer.read_builtin(None)[:PLACES])
    engine.dispose()
    server = Server(url, workdir).start()
    try:
        httpx.post(
            server.url + "/webhooks/africastalking/-/sms",
            data={"from": "+243810000001", "text": "A1 Bunia", "id": "m1", "to": "1"},
        )
        for _ in range(100):  # wait until the alert (and so the index) is done
            time.sleep(0.2)
            if "Bunia" in (workdir / f"serve-{server.port}.log").read_text() or _processed(url):
                break
        assert server.proc is not None
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024
    finally:
        server.stop()
    return rss


def _processed(url: str) -> bool:
    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM alerts").scalar_one()
    engine.dispose()
    return bool(n)


def main() -> dict[str, float]:
    print("geotagging and deduplication")
    rows = gazetteer.read_builtin(None)[:PLACES]
    out = resolution(rows)
    costs = {}
    for size in (1_000, 1_000_000):
        workdir = Path(tempfile.mkdtemp(prefix="kengele-bench-dedup-"))
        url = f"sqlite:///{workdir / 'dedup.db'}"
        upgrade(url)
        t0 = time.perf_counter()
        fill(url, size)
        costs[size] = dedup_cost(url)
        print(
            f"  dedup of one report with {size:>9,} alerts stored: {costs[size]:.3f} ms"
            f"   (filled in {time.perf_counter() - t0:.0f} s)"
        )
    ratio = costs[1_000_000] / costs[1_000]
    print(f"    ratio 1,000,000 / 1,000: {ratio:.2f}   (target: within 2)")
    rss = memory()
    print(f"  kengele serve with {PLACES:,} places loaded: RSS {rss:.0f} MB   (target: under 400 MB)")
    return {
        **out,
        "dedup_1k_ms": costs[1_000],
        "dedup_1m_ms": costs[1_000_000],
        "ratio": ratio,
        "rss_mb": rss,
    }


if __name__ == "__main__":
    main()
