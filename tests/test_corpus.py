"""The public corpus, end to end through the webhooks: intent and category right for every message."""

from __future__ import annotations

import csv
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import transaction
from app.models import Alert, Incident, Message, Person, Place
from app.phones import normalize
from app.services import gazetteer
from app.services.geotag import distance_km
from app.services.runtime import Runtime
from tests.helpers import AT_SECRET, moved, weeks_to_now

CORPUS = Path(__file__).parent / "corpus"
PLACEHOLDER = re.compile(r"\{(E\d+)\}")


def load_corpus_places(runtime: Runtime) -> dict[str, dict[str, str]]:
    gazetteer.store(runtime.engine, gazetteer.read_csv(CORPUS / "gazetteer.csv"))
    with open(CORPUS / "gazetteer.csv", encoding="utf-8") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def load_roster(runtime: Runtime) -> None:
    """The corpus roster as people (the roster import of the CLI and API builds the same rows)."""
    with open(CORPUS / "gazetteer.csv", encoding="utf-8") as f:
        places = {row["name"]: row for row in csv.DictReader(f)}
    with open(CORPUS / "roster.csv", encoding="utf-8") as f, transaction(runtime.factory) as session:
        for row in csv.DictReader(f):
            home = places.get(row["place"])
            session.add(
                Person(
                    name=row["name"],
                    phone=normalize(row["phone"], "CD").value,
                    role=row["role"],
                    language=row["language"] or None,
                    home_lat=float(home["lat"]) if home else (float(row["lat"]) if row["lat"] else None),
                    home_lon=float(home["lon"]) if home else (float(row["lon"]) if row["lon"] else None),
                    level=int(row["level"]) if row["level"] else None,
                    area=row["area"] or None,
                    active=row["active"] != "false",
                    place_id=session.scalar(select(Place.id).where(Place.name == row["place"]))
                    if row["place"]
                    else None,
                )
            )


def wait_processed(runtime: Runtime, provider_id: str) -> Message:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with runtime.factory() as session:
            row = session.scalars(select(Message).where(Message.provider_message_id == provider_id)).first()
            if row is not None and row.processed_at is not None:
                return row
        time.sleep(0.02)
    raise AssertionError(f"{provider_id} not processed")


def test_public_corpus_end_to_end(client: TestClient) -> None:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    places = load_corpus_places(runtime)
    load_roster(runtime)
    grouping: dict[str, set[int]] = {}  # gold incident label -> our incident ids
    corpus = [
        json.loads(line) for line in (CORPUS / "messages.jsonl").read_text().splitlines() if line.strip()
    ]
    # The corpus's dates, moved by whole weeks to the last week: weekdays, hours and the gaps
    # between messages are kept, and Africa's Talking's `date` stays inside the 30 days believed.
    shift = weeks_to_now(max(datetime.fromisoformat(m["at"]) for m in corpus))
    sent: dict[str, str] = {}  # corpus id -> provider message id
    codes: dict[str, str] = {}  # gold incident label -> our incident code
    failures: list[str] = []
    for m in corpus:
        expect: dict[str, Any] = m["expect"]
        pid = sent[expect["retry_of"]] if "retry_of" in expect else f"AT-{m['id']}"
        text = PLACEHOLDER.sub(lambda mo: codes.get(mo.group(1), "K0"), m["text"])
        date = moved(m["at"], shift)
        form = {"from": m["sender"], "to": "12345", "text": text, "date": date, "id": pid, "linkId": "l"}
        before = _counts(runtime)
        assert client.post(f"/webhooks/africastalking/{AT_SECRET}/sms", data=form).status_code == 200
        row = wait_processed(runtime, pid)
        if "retry_of" in expect:
            if _counts(runtime) != before:
                failures.append(f"{m['id']}: a provider retry changed something")
            continue
        sent[m["id"]] = pid
        if row.intent != expect["intent"]:
            failures.append(f"{m['id']} {text!r}: intent {row.intent}, expected {expect['intent']}")
        with runtime.factory() as session:
            alert = session.scalars(select(Alert).where(Alert.message_id == row.id)).first()
            if expect["intent"] == "alert":
                if alert is None or alert.category != expect["category"]:
                    got = alert.category if alert else None
                    failures.append(f"{m['id']} {text!r}: category {got}, expected {expect['category']}")
                elif "count" in expect and alert.details.get("count") != expect["count"]:
                    failures.append(
                        f"{m['id']} {text!r}: count {alert.details.get('count')}, expected {expect['count']}"
                    )
                if alert is not None:
                    gold = places.get(expect["place"])
                    lat, lon = (
                        (float(gold["lat"]), float(gold["lon"])) if gold else (expect["lat"], expect["lon"])
                    )
                    km = distance_km(lat, lon, alert.lat, alert.lon) if alert.lat is not None else None  # type: ignore[arg-type]
                    if km is None or km > 1.0:
                        failures.append(
                            f"{m['id']} {text!r}: placed at {alert.place_name}, expected {expect['place']}"
                        )
                    grouping.setdefault(expect["incident"], set()).add(alert.incident_id)  # type: ignore[arg-type]
                if alert is not None and expect.get("incident") and expect["incident"] not in codes:
                    codes[expect["incident"]] = session.get(Incident, alert.incident_id).code  # type: ignore[union-attr]
            elif alert is not None:
                failures.append(f"{m['id']} {text!r}: made an alert")
            for kind, label in (expect.get("effect") or {}).items():
                status = session.scalars(select(Incident.status).where(Incident.code == codes[label])).one()
                ok = {
                    "acknowledged": status == "acknowledged",
                    "closed": status == "closed",
                    "not_acknowledged": status == "open",
                }[kind]
                if not ok:
                    failures.append(f"{m['id']} {text!r}: {kind} {label} not so (status {status})")
    assert len(grouping) == 20  # every labelled incident of the corpus was seen
    for label, ours in grouping.items():
        if len(ours) != 1:
            failures.append(f"{label}: split over incidents {sorted(ours)}")
    owners: dict[int, str] = {}
    for label, ours in grouping.items():
        for incident_id in ours:
            if incident_id in owners:
                failures.append(f"{label} and {owners[incident_id]} merged into incident {incident_id}")
            owners[incident_id] = label
    assert not failures, "\n".join(failures)
    triage = client.get(
        "/api/v1/triage", headers={"Authorization": "Bearer test-admin-token-0123456789"}
    ).json()
    assert {t["text"] for t in triage["items"]} == {"bonjour je veux savoir", "Hello"}


def _counts(runtime: Runtime) -> tuple[int, int]:
    with runtime.factory() as session:
        return (len(session.scalars(select(Message.id)).all()), len(session.scalars(select(Alert.id)).all()))
