"""Incidents and reports for other programs: OASIS CAP 1.2 alerts, an Atom feed of them, CSV files.

Pure functions: views in (app/services/incidents.py, already masked where the caller must not see
numbers), bytes or text out. XML is built as elements (xml.etree), never by formatting text into
markup, so whatever a reporter typed is escaped.
"""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from pydantic import BaseModel

from app.enums import IncidentStatus, Precision
from app.schemas import CODE_PREFIX, IncidentPublic

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
CAP_MEDIA_TYPE = "application/cap+xml"
ATOM_MEDIA_TYPE = "application/atom+xml"
CSV_MEDIA_TYPE = "text/csv"

# -- CAP: what an incident's state says --------------------------------------------------------
# Restricted, not Public: an alert names villages under threat and how many people reported it;
# broadcast, it tells an armed group where it was seen and which villages speak up, and draws
# reprisals. Private would need the addresses of its recipients, which Kengele does not know:
# Restricted ("users with a known operational requirement") is the holders of an API token.
SCOPE = "Restricted"
RESTRICTION = (
    "For humanitarian, protection and security staff with a Kengele account. Names places under "
    "threat: do not publish or forward outside the response."
)
# The incident's severity (app/services/dedup.py raises it with the category, the people involved
# and the independent reporters) is already the service's judgement of how bad it is: one CAP
# severity each. Urgency follows it: a killing or an attack calls for action now, a tension for
# watching; a closed incident needs none.
#
# | incident severity | CAP severity | CAP urgency (open, acknowledged) | closed |
# | ---               | ---          | ---                              | ---    |
# | critical          | Extreme      | Immediate                        | Past   |
# | high              | Severe       | Immediate                        | Past   |
# | medium            | Moderate     | Expected                         | Past   |
# | low               | Minor        | Future                           | Past   |
SEVERITY = {"critical": "Extreme", "high": "Severe", "medium": "Moderate", "low": "Minor"}
URGENCY = {"critical": "Immediate", "high": "Immediate", "medium": "Expected", "low": "Future"}
# Certainty comes from the independent reporters (distinct numbers), not the reports: one person
# texting three times confirms nothing, and one unverified SMS may be forged or a rumour.
#
# | reporters | CAP certainty |
# | ---       | ---           |
# | 0         | Unknown (its reports were merged or moved away) |
# | 1         | Possible      |
# | 2         | Likely        |
# | 3 or more | Observed      |
CERTAINTY = ("Unknown", "Possible", "Likely", "Observed")
# The circle around a located incident, in km: a gazetteer place is a village's centre, and a
# report "at Djugu" covers it and its fields; a sender's home says only that the event is near
# where they live (the default KENGELE_DEDUP_RADIUS_KM, within which reports join one incident).
# A country's centre, or nothing, locates nothing: no circle.
RADIUS_KM: dict[str, float] = {Precision.PLACE: 5.0, Precision.HOME: 10.0}
HEADLINE_MAX = 160  # CAP 1.2 asks headlines to stay near an SMS's 160 characters
# Characters XML 1.0 cannot hold (C0 controls but tab and newlines, surrogates, U+FFFE/U+FFFF):
# xml.etree writes them as they are, which would make the document unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True, slots=True)
class CapSource:
    """What one incident's CAP alert is built from: its view and the times it changed, oldest first."""

    incident: IncidentPublic
    changes: Sequence[datetime]

    @property
    def version(self) -> int:
        """Which of the incident's messages this is: 1 when opened, one more for each change."""
        return max(len(self.changes), 1)


@dataclass(frozen=True, slots=True)
class Origin:
    """Who publishes: the CAP sender and the public URL links start from."""

    sender: str
    public_url: str


def cap_time(value: datetime) -> str:
    """A CAP 1.2 dateTime: whole seconds, UTC written `-00:00` (the standard's rule, never `Z`)."""
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "-00:00"


def atom_time(value: datetime) -> str:
    """An RFC 3339 time (in RFC 3339, `-00:00` means "offset unknown": UTC is `+00:00` here)."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def _code(incident: IncidentPublic) -> str:
    return incident.code or f"{CODE_PREFIX}{incident.id}"


def identifier(*, origin: Origin, incident: IncidentPublic, version: int) -> str:
    """The CAP identifier of one version of an incident: the same at every reading."""
    return f"kengele:{origin.sender}:{_code(incident)}:{version}"


def cap_url(*, origin: Origin, incident: IncidentPublic) -> str:
    """Where an incident's current CAP alert is served."""
    return f"{origin.public_url}/api/v1/incidents/{_code(incident)}/cap"


def event_name(category: str) -> str:
    """A category in words: `armed_presence` -> `Armed presence`."""
    return category.replace("_", " ").strip().capitalize() or "Incident"


def msg_type(source: CapSource) -> str:
    """Alert when new, Update once changed, Cancel once closed (it still says what was known)."""
    if source.incident.status == IncidentStatus.CLOSED and source.version > 1:
        return "Cancel"
    return "Update" if source.version > 1 else "Alert"


def _where(incident: IncidentPublic) -> str:
    parts = [p for p in (incident.place_name, incident.area) if p]
    if len(parts) == 2 and parts[0].casefold() == parts[1].casefold():
        parts = parts[:1]
    return ", ".join(parts)


def headline(incident: IncidentPublic) -> str:
    """`Looting at Bunia, Irumu`, `Threat (place unknown)`; at most HEADLINE_MAX characters."""
    where = _where(incident)
    text = f"{event_name(incident.category)} " + (f"at {where}" if where else "(place unknown)")
    return text if len(text) <= HEADLINE_MAX else text[: HEADLINE_MAX - 1] + "…"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def description(incident: IncidentPublic) -> str:
    """Say what happened where and how many reported it: counts and places, no one's number or name.

    No times: they are the alert's own elements, and a date in a text reads as a number would.
    """
    where = _where(incident) or "an unknown place"
    status = {
        IncidentStatus.OPEN: "not yet acknowledged by an officer",
        IncidentStatus.ACKNOWLEDGED: "acknowledged by an officer",
        IncidentStatus.CLOSED: "closed",
    }[incident.status]
    return (
        f"{event_name(incident.category)} reported at {where} (incident {_code(incident)}): "
        f"{_plural(incident.report_count, 'report')} from {_plural(incident.reporter_count, 'reporter')}. "
        f"Severity {incident.severity}; {status}. Reports are SMS from community focal points and "
        "villagers, not verified."
    )


def _root(tag: str, namespace: str) -> ET.Element:
    """A document's root element, declaring its namespace as the default one.

    Its children are named without a prefix and inherit it; xml.etree's own namespace handling
    cannot serialise an unprefixed default namespace with unprefixed attributes (Atom's `href`).
    """
    return ET.Element(tag, {"xmlns": namespace})


def _add(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = _NOT_XML.sub("\ufffd", text)
    return element


def cap_alert(*, source: CapSource, origin: Origin) -> ET.Element:
    """Build an incident's CAP 1.2 `<alert>` (elements in the order the schema requires)."""
    incident, version = source.incident, source.version
    sent = source.changes[-1] if source.changes else incident.last_reported_at
    alert = _root("alert", CAP_NS)
    _add(alert, "identifier", identifier(origin=origin, incident=incident, version=version))
    _add(alert, "sender", origin.sender)
    _add(alert, "sent", cap_time(sent))
    _add(alert, "status", "Actual")
    kind = msg_type(source)
    _add(alert, "msgType", kind)
    _add(alert, "scope", SCOPE)
    _add(alert, "restriction", RESTRICTION)
    if kind == "Cancel":
        _add(alert, "note", f"Incident {_code(incident)} is closed.")
    if version > 1:  # an Update or a Cancel names the message it supersedes: "sender,identifier,sent"
        earlier = identifier(origin=origin, incident=incident, version=version - 1)
        _add(alert, "references", f"{origin.sender},{earlier},{cap_time(source.changes[-2])}")
    _add(alert, "incidents", _code(incident))
    info = _add(alert, "info")
    _add(info, "language", "en")
    _add(info, "category", "Security")
    _add(info, "event", event_name(incident.category))
    closed = incident.status == IncidentStatus.CLOSED
    _add(info, "urgency", "Past" if closed else URGENCY.get(incident.severity, "Unknown"))
    _add(info, "severity", SEVERITY.get(incident.severity, "Unknown"))
    _add(info, "certainty", CERTAINTY[min(incident.reporter_count, len(CERTAINTY) - 1)])
    code = _add(info, "eventCode")
    _add(code, "valueName", "kengele:category")
    _add(code, "value", incident.category)
    _add(info, "onset", cap_time(incident.first_reported_at))
    _add(info, "senderName", "Kengele")
    _add(info, "headline", headline(incident))
    _add(info, "description", description(incident))
    _add(info, "web", f"{origin.public_url}/incidents/{_code(incident)}")
    area = _add(info, "area")
    _add(area, "areaDesc", _where(incident) or "Unknown place")
    radius = RADIUS_KM.get(incident.precision)
    if radius is not None and incident.lat is not None and incident.lon is not None:
        _add(area, "circle", f"{incident.lat:.5f},{incident.lon:.5f} {radius:g}")
    return alert


def cap_document(*, source: CapSource, origin: Origin) -> bytes:
    """One incident as a CAP 1.2 XML document (UTF-8)."""
    alert = cap_alert(source=source, origin=origin)
    return ET.tostring(alert, encoding="utf-8", xml_declaration=True)


def atom_feed(*, sources: Sequence[CapSource], origin: Origin, url: str, now: datetime) -> bytes:
    """An Atom feed of incidents, newest first, each entry carrying its CAP alert and linking to it."""
    feed = _root("feed", ATOM_NS)
    _add(feed, "id", f"{origin.public_url}/api/v1/incidents.cap")
    _add(feed, "title", "Kengele incidents (CAP 1.2)")
    latest = [s.changes[-1] for s in sources if s.changes]
    _add(feed, "updated", atom_time(max(latest, default=now)))
    author = _add(feed, "author")
    _add(author, "name", f"Kengele ({origin.sender})")
    _add(feed, "link").attrib.update({"rel": "self", "href": url, "type": ATOM_MEDIA_TYPE})
    for source in sources:
        incident = source.incident
        entry = _add(feed, "entry")
        link = cap_url(origin=origin, incident=incident)
        # One entry per incident, the same id at every version: a reader replaces it when `updated` moves.
        _add(entry, "id", link)
        _add(entry, "title", headline(incident))
        changed = source.changes[-1] if source.changes else incident.last_reported_at
        _add(entry, "updated", atom_time(changed))
        _add(entry, "link").attrib.update({"rel": "alternate", "href": link, "type": CAP_MEDIA_TYPE})
        _add(entry, "summary", description(incident))
        content = _add(entry, "content")
        content.set("type", CAP_MEDIA_TYPE)  # an XML media type: the alert itself is the content
        content.append(cap_alert(source=source, origin=origin))
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


# -- CSV ---------------------------------------------------------------------------------------
# A cell starting with one of these is read as a formula by Excel and LibreOffice (`=HYPERLINK(...)`,
# `+cmd|...`, `@SUM(...)`): what a reporter typed must stay text. A leading apostrophe makes it so.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
# Excel reads a UTF-8 file without this mark as the machine's code page: French and Swahili
# place names would turn into mojibake on the officers' machines.
BOM = "\ufeff"


def neutralise(cell: str) -> str:
    """A text cell Excel and LibreOffice will not evaluate: `=cmd` -> `'=cmd` (also after spaces)."""
    return "'" + cell if cell.lstrip(" ").startswith(FORMULA_STARTS) else cell


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Enum):  # the service's own codes; str() of a StrEnum member is its value
        return neutralise(str(value.value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float):  # our numbers: `-1.5` is a longitude, not a formula
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, dict | list):
        return neutralise(json.dumps(value, ensure_ascii=False, default=str))
    return neutralise(str(value))


def csv_columns(model: type[BaseModel]) -> list[str]:
    """The columns of a view's CSV: its fields, in their order."""
    return list(model.model_fields)


def csv_header(columns: Sequence[str]) -> str:
    """The first lines of a CSV file: the byte order mark and the header row."""
    return BOM + csv_lines([columns])


def csv_lines(rows: Iterable[Sequence[object]]) -> str:
    """Rows as CSV text (RFC 4180: CRLF, quoted where needed), every cell neutralised."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


def csv_rows(views: Iterable[BaseModel], columns: Sequence[str]) -> Iterator[Sequence[object]]:
    """The cells of each view, in the columns' order."""
    for view in views:
        yield [getattr(view, column) for column in columns]
