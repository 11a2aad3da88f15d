"""The OpenAPI document: the provider webhooks are in it, with their own fields, and no secret is."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

import gateways
from app.config import Settings
from app.main import create_app
from tests.helpers import AT_SECRET, TWILIO_TOKEN
from tests.server import TEST_SECRET_KEY

# Every secret a process can be given, each one a value that cannot appear by chance.
SECRETS = {
    "admin_token": "admin-token-7d2f9a41c08e5b36",
    "twilio_auth_token": TWILIO_TOKEN,
    "twilio_webhook_key": "twilio-webhook-key-5e8c1a7f3b9d",
    "at_api_key": "at-api-key-2b6e0d4f8a1c9e7b",
    "at_webhook_secret": AT_SECRET,
    "secret_key": TEST_SECRET_KEY,
}
CONFIGURED = {"twilio_account_sid": "AC" + "4" * 32, "twilio_from": "+15005550006", "at_username": "kengele"}


def document(settings: Settings) -> tuple[dict[str, Any], str]:
    with TestClient(create_app(settings)) as client:
        r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json(), r.text


def expected_paths() -> list[tuple[str, type[gateways.Gateway], str]]:
    """(OpenAPI path, provider, webhook) for every webhook of the registry."""
    return [
        (f"/webhooks/{name}/{'{secret}/' if provider.path_secret else ''}{path}", provider, path)
        for name, provider in gateways.PROVIDERS.items()
        for path in provider.webhooks
    ]


def test_every_provider_webhook_is_in_the_document(make_settings: Callable[..., Settings]) -> None:
    doc, _ = document(make_settings(**SECRETS, **CONFIGURED))
    assert {"/webhooks/twilio/sms", "/webhooks/africastalking/{secret}/ussd"} <= set(doc["paths"])
    for path, provider, name in expected_paths():
        webhook = provider.webhooks[name]
        operation = doc["paths"][path]["post"]
        assert operation["tags"] == ["webhooks"], path
        assert operation["summary"] == f"{provider.title}: {webhook.summary}", path
        assert f"Verified with {provider.verification_setting}" in operation["description"], path
        form = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
        assert list(form["properties"]) == [f.name for f in webhook.fields], path  # the provider's names
        assert form["required"] == [f.name for f in webhook.fields if f.required], path
        answer = operation["responses"][str(webhook.answer.status)]
        if webhook.answer.body:
            (media,) = answer["content"].values()
            assert media["example"] == webhook.answer.body.decode(), path
        assert {"403", "422"} <= set(operation["responses"]), path
        where = {p["name"]: p["in"] for p in operation["parameters"]}
        if provider.path_secret:
            assert where.pop("secret") == "path", path
        if provider.signature_header:
            assert where.pop(provider.signature_header) == "header", path
        assert where == {}, path
    twilio = doc["paths"]["/webhooks/twilio/sms"]["post"]["requestBody"]["content"]
    assert {"From", "Body", "MessageSid"} <= set(
        twilio["application/x-www-form-urlencoded"]["schema"]["required"]
    )
    at = doc["paths"]["/webhooks/africastalking/{secret}/sms"]["post"]["requestBody"]["content"]
    assert {"from", "text", "id", "to", "date", "linkId"} <= set(
        at["application/x-www-form-urlencoded"]["schema"]["properties"]
    )
    names = {tag["name"]: tag for tag in doc["tags"]}
    assert "description" in names["webhooks"]


@pytest.mark.parametrize("env", ["test", "development"])
def test_the_document_holds_no_secret(make_settings: Callable[..., Settings], env: str) -> None:
    _, text = document(make_settings(env=env, **SECRETS, **CONFIGURED))
    for name, value in SECRETS.items():
        assert value not in text, name
        assert json.dumps(value)[1:-1] not in text, name


def test_the_document_says_which_setting_verifies_a_webhook_not_how_this_process_is_set(
    make_settings: Callable[..., Settings],
) -> None:
    """It is served to anyone: whether this process checks a provider's webhooks is not theirs to know."""
    described = []
    for settings in (
        make_settings(),  # the test settings: no Twilio token
        make_settings(env="development", at_webhook_secret=None),  # Africa's Talking unchecked
        make_settings(**SECRETS, **CONFIGURED),  # everything checked
    ):
        doc, _ = document(settings)
        webhooks = {
            p: item["post"]["description"] for p, item in doc["paths"].items() if p.startswith("/webhooks/")
        }
        assert not any(w in d for d in webhooks.values() for w in ("WITHOUT", "this process", "is not set"))
        described.append(webhooks)
    assert described[0] == described[1] == described[2]
    twilio = described[0]["/webhooks/twilio/sms"]
    assert "Verified with TWILIO_AUTH_TOKEN" in twilio and "404" in twilio
    assert "Verified with KENGELE_AT_WEBHOOK_SECRET" in described[0]["/webhooks/africastalking/{secret}/sms"]
