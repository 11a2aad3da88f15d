"""The console gateway: the embedded default. It "sends" by logging, so `make run` needs no account."""

from __future__ import annotations

import logging
from typing import Any

from gateways.base import Gateway, SendResult, Verifier

NAME = "console"
log = logging.getLogger("kengele.console")


class ConsoleGateway(Gateway):
    """Records an outbound SMS in the log, one line a person can read; the outbox row is the record."""

    name = NAME
    reaches_phones = False

    @classmethod
    def verifier(cls, settings: Any) -> Verifier | None:
        return None  # it receives nothing: `kengele simulate` stands in for its webhooks

    @classmethod
    def from_settings(cls, settings: Any) -> ConsoleGateway:
        return cls()

    def send(self, *, to: str, text: str, idempotency_key: str, label: str = "") -> SendResult:
        # The log masks the number (+243*******01 for an officer and a reporter alike): the label
        # says which of them this SMS is for.
        log.info("console SMS to %s (%s): %s", to, label or "?", text)
        return SendResult(provider_message_id=f"console-{idempotency_key}")
