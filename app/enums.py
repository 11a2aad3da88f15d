"""The closed sets of values the service stores and compares: statuses, purposes, roles, outcomes.

Each is a `StrEnum`: a member is its string, so the columns stay `String` (no database enum type,
no migration), a row read back compares equal to a member, and JSON, logs, metric labels and
idempotency keys read exactly as before. One module because models, schemas, services and routes
all use them, and schemas do not import the models.

Defined elsewhere, because the packages that produce them must not import the app:
`gateways.base.MessageKind` (sms|beep), `gateways.base.DeliveryStatus` (what a receipt says) and
`keywords.parser.Intent` / `Via` (what a message means, how it was read).
"""

from __future__ import annotations

from enum import StrEnum


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MessageStatus(StrEnum):
    """Inbound rows are `received`; outbound ones go queued, sending, sent, delivered, or end `failed`."""

    RECEIVED = "received"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"


class Purpose(StrEnum):
    """Why an outbound SMS is sent."""

    ALERT_FORWARD = "alert_forward"  # a new incident, to the officers of its area
    ESCALATION = "escalation"  # not acknowledged in time, or a forward that failed: someone else
    NOTICE = "notice"  # who acknowledged or closed; focal points gone silent
    UPDATE = "update"  # a new report on an incident, to the officer who acknowledged it
    REPLY = "reply"  # the answer to an inbound message
    CHECKIN = "checkin"  # a scheduled "is all well?" to a focal point


# An officer must learn of an incident through one of these: a failed one is handed on to another.
FORWARDS = (Purpose.ALERT_FORWARD, Purpose.ESCALATION)


class Outcome(StrEnum):
    """What processing made of an inbound message."""

    ALERT = "alert"
    COMMAND = "command"
    UNKNOWN = "unknown"  # not understood: for a human to read (triage)
    ERROR = "error"  # processing failed every time: parked for triage
    DISMISSED = "dismissed"  # read by an officer in triage: not an alert (the reason is audit-logged)


class IncidentStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class Precision(StrEnum):
    """How a report is located, from worst to best."""

    UNKNOWN = "unknown"
    COUNTRY = "country"  # the centre of the sender's phone's country: it locates nothing
    HOME = "home"  # the sender's home on the roster
    PLACE = "place"  # a place of the gazetteer the message names


class Role(StrEnum):
    """A person's role on the roster."""

    FOCAL_POINT = "focal_point"
    OFFICER = "officer"
    ADMIN = "admin"


class PersonStatus(StrEnum):
    APPROVED = "approved"
    PENDING = "pending"  # a self-registration (JOIN) waiting for an admin
    REJECTED = "rejected"


class ApiRole(StrEnum):
    """An API token's role, lowest first: each may do what the ones before it may."""

    VIEWER = "viewer"
    OFFICER = "officer"
    ADMIN = "admin"


class AuditEntity(StrEnum):
    INCIDENT = "incident"
    PERSON = "person"
    ALERT = "alert"
    TOKEN = "token"  # noqa: S105 (an API token, by name; not a secret)
    USER = "user"  # a dashboard account
    MESSAGE = "message"  # an inbound message (triage)
    DATABASE = "database"  # the whole database (a retention run)
    WEBHOOK = "webhook"  # an outbound webhook subscription (by URL; never its secret)


class AuditAction(StrEnum):
    """What an audit log row records."""

    # an incident's steps (its history in the API)
    FORWARD = "forward"
    FORWARD_HELD = "forward_held"  # a new incident not forwarded: its sender floods (KENGELE_FLOOD_LIMIT)
    ESCALATE = "escalate"
    FAILOVER = "failover"
    ACK = "ack"
    ACK_REFUSED = "ack_refused"  # an SMS acknowledgement from someone who is not an officer
    CLOSE = "close"
    CLOSE_REFUSED = "close_refused"
    MERGE = "merge"
    MOVE_REPORT = "move_report"
    # a report's
    REVEAL_PHONE = "reveal_phone"  # an admin was shown a reporter's number (details: the reason)
    ALERT_REVIEWED = "alert_reviewed"  # an officer looked at a report the parser was unsure of
    # a person's
    PERSON_CREATE = "person_create"
    PERSON_UPDATE = "person_update"
    PERSON_APPROVE = "person_approve"
    PERSON_REJECT = "person_reject"
    PERSON_DEACTIVATE = "person_deactivate"
    JOIN_REQUEST = "join_request"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    SET_LANGUAGE = "set_language"
    SILENT = "silent"
    SILENT_CLEARED = "silent_cleared"
    # an API token's (names, not secrets)
    TOKEN_CREATE = "token_create"  # noqa: S105
    TOKEN_REVOKE = "token_revoke"  # noqa: S105
    # a dashboard account's
    USER_CREATE = "user_create"
    USER_DISABLE = "user_disable"
    USER_ENABLE = "user_enable"
    USER_PASSWORD = "user_password"  # noqa: S105 (a password was changed; never the password)
    USER_LOCKED = "user_locked"  # LOCK_AFTER failed sign-ins in a row
    SIGN_IN = "sign_in"
    NOTE = "note"  # an officer's note on an incident
    DISMISS = "dismiss"  # a message nobody could read, set aside with a reason (triage)
    TRIAGE_ALERT = "triage_alert"  # a message nobody could read, made an alert by an officer
    # the database's: what a retention run removed
    RETENTION = "retention"
    # an outbound webhook subscription's
    WEBHOOK_CREATE = "webhook_create"
    WEBHOOK_DISABLE = "webhook_disable"


class WebhookEvent(StrEnum):
    """What an outbound webhook delivery says happened to an incident (its `event`)."""

    CREATED = "incident.created"  # a first report opened it (or a report moved out into a new one)
    UPDATED = "incident.updated"  # a report joined or left it, or reports were merged into it
    ACKNOWLEDGED = "incident.acknowledged"
    CLOSED = "incident.closed"
    MERGED = "incident.merged"  # its reports were moved into another incident; it is closed
    ESCALATED = "incident.escalated"  # not acknowledged in time: a further level of officers told


class DeliveryState(StrEnum):
    """Where one outbound webhook delivery stands."""

    PENDING = "pending"  # waiting for its turn or its next attempt
    DELIVERING = "delivering"  # claimed by a deliverer, under a lease
    DELIVERED = "delivered"  # the receiver answered 2xx
