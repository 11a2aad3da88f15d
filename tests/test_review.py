"""Alerts read with low confidence: marked needs_review, listed by the API and on /triage, cleared
by an officer (audit-logged); what the parser read past the card kept in the alert's details."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db import transaction
from app.enums import AuditAction, AuditEntity
from app.models import Alert, AuditLog
from app.services import gazetteer
from app.services.retention import WRITTEN_DETAILS
from tests.dashboard import signed_in
from tests.helpers import AT_SECRET, at_form, wait_for

PLACES = [
    gazetteer.PlaceRow("ITU-002", "Djugu", (), 1.922, 30.501, "Ituri", "Djugu", "CD", None, None, "csv"),
    gazetteer.PlaceRow("ITU-003", "Fataki", (), 2.012, 30.762, "Ituri", "Djugu", "CD", None, None, "csv"),
    gazetteer.PlaceRow("ITU-001", "Bunia", (), 1.5594, 30.2522, "Ituri", "Irumu", "CD", None, None, "csv"),
]
CRY = "au secours venez vite Fataki"  # a cry for help, no category: other, to review
STEM = "ils pillaient Djugu"  # "pillaient" read by its stem: looting, to review
PLAIN = "INCENDIE Bunia 10 maisons 3 km vers Djugu"  # on the card: not to review


def send(client: TestClient, auth: dict[str, str], *texts: str) -> list[dict[str, Any]]:
    """Send each text as an SMS through the webhook; the alerts they made, newest first."""
    gazetteer.store(client.app.state.runtime.engine, PLACES)  # type: ignore[attr-defined]
    for n, text in enumerate(texts, start=1):
        answer = client.post(
            f"/webhooks/africastalking/{AT_SECRET}/sms",
            data=at_form(sender=f"+24381000010{n}", text=text, pid=f"REV{n}"),
        )
        assert answer.status_code == 200, answer.text
    return wait_for(
        lambda: (
            (page := client.get("/api/v1/alerts", headers=auth).json())["total"] == len(texts)
            and page["items"]
        )
    )


def test_alerts_read_with_low_confidence_are_listed_for_review(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    alerts = send(client, auth, CRY, STEM, PLAIN)
    by_text = {a["text"]: a for a in alerts}
    cry, stem, plain = by_text[CRY], by_text[STEM], by_text[PLAIN]
    assert (cry["category"], cry["needs_review"]) == ("other", True)
    assert (stem["category"], stem["needs_review"]) == ("looting", True)
    assert stem["details"]["readings"] == ["pillaient -> pille (looting)"]
    assert plain["needs_review"] is False and "readings" not in plain["details"]
    # 10 houses are not 10 people; the distance and the direction are not the place
    assert plain["details"]["things"] == {"maisons": 10} and plain["details"]["count"] is None
    assert plain["details"]["offset"] == "3 km · vers Djugu" and plain["place_name"] == "Bunia"
    assert {"readings", "offset"} <= set(WRITTEN_DETAILS)  # the sender's words: retention removes them

    listed = client.get("/api/v1/alerts", params={"needs_review": "true"}, headers=auth).json()
    assert [a["text"] for a in listed["items"]] == [STEM, CRY]  # newest first
    cleared = client.get("/api/v1/alerts", params={"needs_review": "false"}, headers=auth).json()
    assert [a["text"] for a in cleared["items"]] == [PLAIN]
    assert client.get("/api/v1/alerts", params={"needs_review": "maybe"}, headers=auth).status_code == 422
    incident = client.get(f"/api/v1/incidents/{cry['incident_id']}", headers=auth).json()
    assert incident["needs_review"] is True and incident["reports"][0]["needs_review"] is True

    exported = client.get("/api/v1/alerts.csv", params={"needs_review": "true"}, headers=auth)
    rows = list(csv.DictReader(io.StringIO(exported.text.lstrip("\ufeff"))))
    assert [r["text"] for r in rows] == [STEM, CRY] and {r["needs_review"] for r in rows} == {"true"}


def test_an_officer_marks_an_alert_reviewed_on_the_triage_page(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    alerts = send(client, auth, CRY, STEM)
    cry = next(a for a in alerts if a["text"] == CRY)
    csrf = signed_in(client, "Amina", "officer")
    page = client.get("/triage").text
    section = page[page.index('id="to-review"') : page.index("</section>")]
    assert CRY in section and STEM in section
    assert section.index(STEM) < section.index(CRY)  # newest first
    assert "pillaient -&gt; pille (looting)" in section  # what it was read as
    code = f"K{cry['incident_id']}"
    assert f'href="/incidents/{code}"' in section
    assert "to review" in client.get(f"/incidents/{code}").text

    refused = client.post(f"/triage/alerts/{cry['id']}/reviewed", data={}, follow_redirects=False)
    assert refused.status_code == 403  # a form without its CSRF token
    assert client.get(f"/api/v1/alerts/{cry['id']}", headers=auth).json()["needs_review"] is True

    done = client.post(
        f"/triage/alerts/{cry['id']}/reviewed", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == "/triage"
    assert client.get(f"/api/v1/alerts/{cry['id']}", headers=auth).json()["needs_review"] is False
    section = re.split(r"</section>", client.get("/triage").text)[0]
    assert CRY not in section and STEM in section
    assert "to review" not in client.get(f"/incidents/{code}").text
    again = client.post(
        f"/triage/alerts/{cry['id']}/reviewed", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert again.status_code == 303  # already reviewed: nothing more is logged
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with transaction(runtime.factory) as session:
        steps = session.scalars(select(AuditLog).where(AuditLog.action == AuditAction.ALERT_REVIEWED)).all()
        assert [(s.actor, s.entity, s.entity_id) for s in steps] == [
            ("web:Amina", AuditEntity.ALERT, str(cry["id"]))
        ]
        assert session.get(Alert, cry["id"]).needs_review is False  # type: ignore[union-attr]
    assert client.post("/triage/alerts/999999/reviewed", data={"csrf_token": csrf}).status_code == 404


def test_a_viewer_cannot_mark_an_alert_reviewed(
    client: TestClient, auth: dict[str, str], db_url: str
) -> None:
    (cry,) = send(client, auth, CRY)
    csrf = signed_in(client, "Baraka", "viewer")
    answer = client.post(
        f"/triage/alerts/{cry['id']}/reviewed", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert answer.status_code == 403
    assert client.get("/triage", follow_redirects=False).status_code == 403
    assert client.get(f"/api/v1/alerts/{cry['id']}", headers=auth).json()["needs_review"] is True
