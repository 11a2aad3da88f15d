"""Generated input on every operation of /openapi.json: never a 5xx, every answer as documented.

Schemathesis reads the app's own document (the API routes and the provider webhooks) and generates
requests for every operation, valid and invalid ones; each is sent through the app (a TestClient, so
the runtime's workers run as in production) to a database holding places, a roster and incidents,
and each answer is checked: no server error, a documented status, the documented content type, a
body matching the documented schema.

Schemathesis's own pytest integration (`from_fixture(...).parametrize()`) does not run under the
pytest this project uses (it renames nodes through an attribute pytest 9.2 no longer has), so each
operation is a Hypothesis test of its own, built from `operation.as_strategy`, in a subtest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import requests
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, reject, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select

from app.config import Settings
from app.enums import Direction, Outcome
from app.main import create_app
from app.models import Message
from app.services.runtime import Runtime
from gateways.base import NO_SECRET
from gateways.twilio import compute_signature
from tests.conftest import ADMIN_TOKEN
from tests.helpers import AT_SECRET, TWILIO_TOKEN, at_form, wait_for
from tests.test_api import add_token
from tests.test_corpus import load_corpus_places, load_roster

BASE_URL = "http://testserver"
VIEWER_TOKEN = "viewer-token-schemathesis-0123456789"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 20  # per operation and generation mode: the default run stays near a minute per database
LONG_EXAMPLES = 300
# Refusals a viewer gets from an officer's or an admin's operation.
ROLE_REFUSALS = {401, 403}
# What a webhook answers a request that is not the provider's (no signature, wrong path secret), or
# not a form it reads: never a 2xx, never a 5xx.
WEBHOOK_REFUSALS = {400, 403, 413, 415, 422}


@dataclass
class Served:
    """A running app on a database with places, a roster, incidents and a viewer's token."""

    client: TestClient
    runtime: Runtime
    document: dict[str, Any]

    def operations(self, *, webhooks: bool) -> list[APIOperation]:
        schema = schemathesis.openapi.from_dict(self.document)
        found = [result.ok() for result in schema.get_all_operations()]
        return [op for op in found if ("webhooks" in op.tags) == webhooks]


def _inbound_done(runtime: Runtime) -> bool:
    with runtime.factory() as session:
        waiting = select(func.count()).select_from(Message)
        waiting = waiting.where(Message.direction == Direction.INBOUND, Message.processed_at.is_(None))
        return not session.scalar(waiting)


def _failed_inbound(runtime: Runtime) -> list[int]:
    with runtime.factory() as session:
        query = select(Message.id).where(
            Message.direction == Direction.INBOUND, Message.outcome == Outcome.ERROR
        )
        return list(session.scalars(query))


@contextmanager
def serving(settings_: Settings, db_url: str, at_secret: str) -> Iterator[Served]:
    """Start the app, load places, the corpus roster, three reports (two incidents) and a viewer."""
    with TestClient(create_app(settings_)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        load_corpus_places(runtime)
        load_roster(runtime)
        add_token(db_url, "viewer", VIEWER_TOKEN)
        for pid, text in (("SCH1", "A1 Djugu 20"), ("SCH2", "A6 Bunia"), ("SCH3", "zzz")):
            form = at_form(sender="+243810000001", text=text, pid=pid)
            r = client.post(f"/webhooks/africastalking/{at_secret}/sms", data=form)
            assert r.status_code == 200, r.text
        wait_for(lambda: _inbound_done(runtime))
        document = client.get("/openapi.json").json()
        yield Served(client, runtime, document)
        assert runtime.dead_parts() == [], "a background worker died during the run"


@pytest.fixture
def served(make_settings: Callable[..., Settings], db_url: str) -> Iterator[Served]:
    """Both providers' webhooks verified (Twilio's signature, Africa's Talking's path secret)."""
    with serving(make_settings(twilio_auth_token=TWILIO_TOKEN), db_url, AT_SECRET) as app:
        yield app


@pytest.fixture
def served_unverified(make_settings: Callable[..., Settings], db_url: str) -> Iterator[Served]:
    """`development` without the providers' checks: their webhooks are served unverified."""
    with serving(make_settings(env="development", at_webhook_secret=None), db_url, NO_SECRET) as app:
        yield app


def send(client: TestClient, case: Case, headers: dict[str, str] | None = None) -> httpx.Response:
    """Send the request schemathesis serialised for `case`, byte for byte, through the test client."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    fields = ("method", "url", "headers", "params", "data", "json", "files", "cookies")
    try:
        prepared = requests.Request(**{k: kwargs[k] for k in fields if k in kwargs}).prepare()
        return client.request(
            prepared.method or "GET",
            prepared.url or BASE_URL,
            headers=dict(prepared.headers),
            content=prepared.body,
            follow_redirects=False,
        )
    except (ValueError, UnicodeError, requests.exceptions.InvalidHeader, httpx.LocalProtocolError):
        reject()  # a header no HTTP client can send (a newline in a generated value): not a request


def operation_takes_input(operation: APIOperation) -> bool:
    """Whether the operation has a parameter or a body to generate."""
    return bool(operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody"))


def run_operation(
    operation: APIOperation,
    call: Callable[[Case], None],
    *,
    examples: int,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
) -> None:
    """Run `call` on generated cases of one operation: valid ones, then invalid ones."""
    for mode in modes:

        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,  # the same cases on every run: a failure reproduces
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def generated(case: Case) -> None:
            call(case)

        try:
            generated()
        except Unsatisfiable:
            # Nothing to make invalid (no parameter, no body): there is no negative case.
            if mode is not GenerationMode.NEGATIVE or operation_takes_input(operation):
                raise


def each_operation(
    subtests: Any, operations: list[APIOperation], test: Callable[[APIOperation], None]
) -> None:
    assert operations, "no operations in the document"
    for operation in operations:
        with subtests.test(msg=operation.label):
            test(operation)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the JSON API, health and metrics ---------------------------------------------------------
def api_as_admin(served: Served, subtests: Any, examples: int) -> None:
    def test(operation: APIOperation) -> None:
        def call(case: Case) -> None:
            response = send(served.client, case, bearer(ADMIN_TOKEN))
            case.validate_response(response, checks=CHECKS)

        run_operation(operation, call, examples=examples)

    each_operation(subtests, served.operations(webhooks=False), test)


def test_api_generated_as_admin(served: Served, subtests: Any) -> None:
    api_as_admin(served, subtests, EXAMPLES)


@pytest.mark.fault_long
def test_api_generated_as_admin_long(served: Served, subtests: Any) -> None:
    api_as_admin(served, subtests, LONG_EXAMPLES)


def _viewer_may(operation: APIOperation) -> bool:
    """Whether a viewer's token is admitted (the operations the README gives to `viewer`)."""
    return operation.method.upper() == "GET" and not operation.path.startswith(
        ("/api/v1/messages", "/api/v1/triage", "/api/v1/people")
    )


def _unreadable_body(response: httpx.Response) -> bool:
    """A body that is not JSON at all: FastAPI refuses it before any dependency, the token's check too."""
    detail = response.json().get("detail", "") if response.status_code in (400, 422) else ""
    return detail in ("body: JSON decode error", "There was an error parsing the body")


def test_api_generated_as_viewer(served: Served, subtests: Any) -> None:
    """A viewer's token: the officers' and admins' operations refuse it (401/403), never a 5xx."""

    def test(operation: APIOperation) -> None:
        def call(case: Case) -> None:
            response = send(served.client, case, bearer(VIEWER_TOKEN))
            case.validate_response(response, checks=CHECKS)
            if not _viewer_may(operation) and not _unreadable_body(response):
                assert response.status_code in ROLE_REFUSALS, (operation.label, response.status_code)

        run_operation(operation, call, examples=EXAMPLES // 2)

    api = [op for op in served.operations(webhooks=False) if op.path.startswith("/api/")]
    each_operation(subtests, api, test)


# -- the provider webhooks ---------------------------------------------------------------------
def test_webhooks_refuse_generated_requests(served: Served, subtests: Any) -> None:
    """As generated: no valid signature or path secret, so refused (403), or refused unread (4xx)."""

    def test(operation: APIOperation) -> None:
        def call(case: Case) -> None:
            response = send(served.client, case)
            case.validate_response(response, checks=CHECKS)
            assert response.status_code in WEBHOOK_REFUSALS, (operation.label, response.status_code)

        run_operation(operation, call, examples=EXAMPLES)

    each_operation(subtests, served.operations(webhooks=True), test)


def signed(case: Case) -> dict[str, str]:
    """Make `case` the provider's own: the right path secret, a valid Twilio signature of its form."""
    if "secret" in (case.path_parameters or {}):
        case.path_parameters = {**(case.path_parameters or {}), "secret": AT_SECRET}
        return {}
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    prepared = requests.Request(
        **{k: kwargs[k] for k in ("method", "url", "headers", "params", "data") if k in kwargs}
    ).prepare()
    body = prepared.body or ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    url = urlsplit(prepared.url or BASE_URL)
    # The app checks the URL its settings say it is served at (public_url), path and query.
    public = f"{BASE_URL}{url.path}" + (f"?{url.query}" if url.query else "")
    return {"X-Twilio-Signature": compute_signature(TWILIO_TOKEN, public, params)}


def webhooks_signed(served: Served, subtests: Any, examples: int) -> None:
    def test(operation: APIOperation) -> None:
        statuses: set[int] = set()

        def call(case: Case) -> None:
            response = send(served.client, case, signed(case))
            case.validate_response(response, checks=CHECKS)
            statuses.add(response.status_code)

        run_operation(operation, call, examples=examples)
        # Signed, the forms got past verification: the parser answered (a 2xx, or a 4xx naming a field).
        assert statuses - {403}, (operation.label, statuses)
        assert any(200 <= status < 300 for status in statuses), (operation.label, statuses)

    each_operation(subtests, served.operations(webhooks=True), test)
    # What was stored went through the pipeline (parser, geotag, dedup, escalation) without a crash.
    wait_for(lambda: _inbound_done(served.runtime), timeout=60)
    assert _failed_inbound(served.runtime) == []


def test_webhooks_generated_forms_signed(served: Served, subtests: Any) -> None:
    """Signed as the provider signs: generated forms reach the parsers; 2xx or 4xx, never a 5xx."""
    webhooks_signed(served, subtests, EXAMPLES)


@pytest.mark.fault_long
def test_webhooks_generated_forms_signed_long(served: Served, subtests: Any) -> None:
    webhooks_signed(served, subtests, LONG_EXAMPLES)


def test_webhooks_generated_forms_unverified_in_development(served_unverified: Served, subtests: Any) -> None:
    """Unverified (development): every generated form reaches the parser; 2xx or 4xx, never a 5xx."""

    def test(operation: APIOperation) -> None:
        def call(case: Case) -> None:
            if "secret" in (case.path_parameters or {}):
                case.path_parameters = {**(case.path_parameters or {}), "secret": NO_SECRET}
            response = send(served_unverified.client, case)
            case.validate_response(response, checks=CHECKS)

        run_operation(operation, call, examples=EXAMPLES // 2)

    each_operation(subtests, served_unverified.operations(webhooks=True), test)
    wait_for(lambda: _inbound_done(served_unverified.runtime), timeout=60)
    assert _failed_inbound(served_unverified.runtime) == []


def test_a_body_that_is_not_json_is_refused_naming_the_body(client: TestClient) -> None:
    """Found by the generated runs: the detail named a character offset (`0: JSON decode error`)."""
    for body in (b"\x00", b"{", b"\xff\xfe"):
        r = client.post(
            "/api/v1/people",
            content=body,
            headers={**bearer(ADMIN_TOKEN), "Content-Type": "application/json"},
        )
        assert (r.status_code, r.json()) == (422, {"detail": "body: JSON decode error"}), body


def test_every_api_operation_documents_its_refusals(client: TestClient) -> None:
    """The refusals an API client can get are in the document, each with the body it carries."""
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]  # no answer has that shape
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not path.startswith("/api/"):
                continue
            responses = operation["responses"]
            assert "401" in responses, (method, path)
            for code, response in responses.items():
                if code.startswith("4") and path != "/api/v1/people/import":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, code)
    readyz = document["paths"]["/readyz"]["get"]["responses"]
    assert {"200", "503"} <= set(readyz)
    assert "text/plain" in document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
