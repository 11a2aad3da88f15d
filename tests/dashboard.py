"""Helpers of the dashboard's tests: users, signing in through the form, the CSRF token of a page."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from app.db import transaction
from app.enums import ApiRole
from app.services import accounts

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_user(
    client: TestClient, name: str, role: str, *, language: str = "en", password: str = PASSWORD
) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    with transaction(runtime.factory) as session:
        accounts.create_user(
            session=session, name=name, role=ApiRole(role), password=password, language=language, actor="test"
        )


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no form with a csrf_token"
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD, next_url: str = "/") -> Any:
    """Post the sign-in form as a browser does (its own CSRF cookie and field); the answer."""
    english = {"Accept-Language": "en"}  # else the sign-in page speaks KENGELE_DEFAULT_LANGUAGE
    form = client.get("/login", headers=english)
    assert form.status_code == 200, form.text
    return client.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": csrf_of(form.text), "next": next_url},
        headers=english,
        follow_redirects=False,
    )


def signed_in(client: TestClient, name: str, role: str, **kwargs: Any) -> str:
    """Create a user, sign in; the session's CSRF token (from the incidents page)."""
    add_user(client, name, role, **kwargs)
    answer = sign_in(client, name)
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/").text)
