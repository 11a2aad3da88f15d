"""The value sets shared across packages stay in step, and each member is the string it replaced."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from app.enums import MessageStatus, Outcome, Purpose, Role
from app.services import outbox, pipeline
from gateways import africastalking, twilio
from gateways.base import DeliveryStatus
from keywords import parser
from keywords.grammar import COMMANDS


def test_every_delivery_status_but_unknown_is_a_message_status() -> None:
    """A receipt moves its message to the status it names: the gateways' words must be the app's."""
    mapped = set(DeliveryStatus) - {DeliveryStatus.UNKNOWN}
    assert mapped <= set(MessageStatus), mapped - set(MessageStatus)
    assert mapped == set(MessageStatus) - {MessageStatus.RECEIVED}  # every outbound status can be reported
    assert DeliveryStatus.UNKNOWN not in set(MessageStatus)  # an unmapped receipt moves nothing


@pytest.mark.parametrize("table", [twilio.STATUSES, africastalking.STATUSES], ids=["twilio", "at"])
def test_the_providers_tables_map_to_delivery_statuses(table: Mapping[str, DeliveryStatus]) -> None:
    assert all(isinstance(status, DeliveryStatus) for status in table.values())
    assert DeliveryStatus.UNKNOWN not in table.values()


def test_every_outbound_status_has_a_rank_and_every_purpose_a_priority() -> None:
    assert set(outbox._RANK) == set(MessageStatus) - {MessageStatus.RECEIVED}
    assert set(outbox.PRIORITY) == set(Purpose) == set(outbox.PURPOSES)


def test_every_intent_has_a_handler_and_every_command_is_an_intent() -> None:
    assert set(pipeline.HANDLERS) == set(parser.Intent)
    assert set(COMMANDS) <= set(parser.Intent)


def test_the_parser_knows_the_officer_roles_by_the_apps_names() -> None:
    """keywords cannot import the app: its copy of the roles that acknowledge must stay the app's."""
    assert set(parser.OFFICER_ROLES) == set(pipeline.OFFICER_ROLES) <= set(Role)


def test_members_are_their_strings_in_comparisons_keys_and_json() -> None:
    assert MessageStatus.QUEUED == "queued" and str(MessageStatus.QUEUED) == "queued"
    assert {"reply": 1}[Purpose.REPLY] == 1 and {Purpose.REPLY: 1}["reply"] == 1
    assert f"{Purpose.ALERT_FORWARD}:42:1" == "alert_forward:42:1"  # idempotency keys unchanged
    assert json.dumps({"outcome": Outcome.UNKNOWN}) == '{"outcome": "unknown"}'
