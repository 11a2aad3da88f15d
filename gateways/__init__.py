"""Gateways to the telephone network, found by name; core code never branches on vendors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateways.africastalking import AfricasTalkingGateway
from gateways.base import Gateway
from gateways.console import ConsoleGateway
from gateways.twilio import TwilioGateway

if TYPE_CHECKING:
    from app.config import Settings

REGISTRY: dict[str, type[TwilioGateway] | type[AfricasTalkingGateway] | type[ConsoleGateway]] = {
    TwilioGateway.name: TwilioGateway,
    AfricasTalkingGateway.name: AfricasTalkingGateway,
    ConsoleGateway.name: ConsoleGateway,
}


def build(settings: Settings) -> list[Gateway]:
    """The gateways of KENGELE_GATEWAY, in order; a misconfigured one is an error at start-up."""
    return [REGISTRY[name].from_settings(settings) for name in settings.gateway]
