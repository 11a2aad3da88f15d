"""What each provider declares of its webhook forms (the API document's fields) is what it reads."""

from __future__ import annotations

import pytest

import gateways
from gateways.base import Form, PayloadError, Webhook

WEBHOOKS = [
    pytest.param(provider, path, webhook, id=f"{name}/{path}")
    for name, provider in gateways.PROVIDERS.items()
    for path, webhook in provider.webhooks.items()
]


class Reading(Form):
    """A form that remembers which fields the parser asked for."""

    __slots__ = ("read",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.read: set[str] = set()

    def get(self, name: str) -> str | None:
        self.read.add(name)
        return super().get(name)


def example_form(webhook: Webhook, *, required_only: bool = False, without: str = "") -> Reading:
    return Reading(
        [
            (f.name, f.example)
            for f in webhook.fields
            if f.name != without and (f.required or not required_only)
        ]
    )


@pytest.mark.parametrize(("provider", "path", "webhook"), WEBHOOKS)
def test_every_webhook_says_what_it_is(provider: type[gateways.Gateway], path: str, webhook: Webhook) -> None:
    assert provider.title and provider.verification_setting, provider.name
    assert webhook.summary and webhook.answer_description and webhook.fields, path
    names = [f.name for f in webhook.fields]
    assert len(names) == len(set(names)), names
    assert all(f.description and (f.example or not f.required) for f in webhook.fields), path
    assert webhook.text_fields <= set(names), path  # a field holding what a person wrote is declared


@pytest.mark.parametrize(("provider", "path", "webhook"), WEBHOOKS)
def test_the_declared_fields_are_those_the_parser_reads(
    provider: type[gateways.Gateway], path: str, webhook: Webhook
) -> None:
    full = example_form(webhook)
    webhook.parse(full)  # every example is a value the parser accepts
    assert full.read <= {f.name for f in webhook.fields}, f"read but not declared: {full.read}"
    webhook.parse(example_form(webhook, required_only=True))  # the required ones are enough


@pytest.mark.parametrize(("provider", "path", "webhook"), WEBHOOKS)
def test_a_required_field_is_refused_when_missing(
    provider: type[gateways.Gateway], path: str, webhook: Webhook
) -> None:
    required = [f.name for f in webhook.fields if f.required]
    assert required, path
    for name in required:
        with pytest.raises(PayloadError) as refused:
            webhook.parse(example_form(webhook, required_only=True, without=name))
        assert refused.value.field == name, (path, name)
