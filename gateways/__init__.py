"""Gateways to the telephone network, found by name; core code never branches on vendors."""

from __future__ import annotations

from typing import Any

from gateways.africastalking import AfricasTalkingGateway
from gateways.base import Gateway
from gateways.console import ConsoleGateway
from gateways.twilio import TwilioGateway

# Every provider this build knows; adding one is adding a module and a line here.
PROVIDERS: dict[str, type[Gateway]] = {
    provider.name: provider for provider in (TwilioGateway, AfricasTalkingGateway, ConsoleGateway)
}


def build(settings: Any) -> list[Gateway]:
    """The senders of `settings.gateway` (KENGELE_GATEWAY), in order; a misconfigured one fails start-up."""
    return [PROVIDERS[name].from_settings(settings) for name in settings.gateway]
