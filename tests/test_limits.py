"""Cost-control settings: COUNT/SECONDS and country lists read, bad ones refused by name at start."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.db import transaction
from app.models import Person, Place
from app.services.limits import Limit, ReplyCountries, parse_countries, parse_limit
from app.services.runtime import Runtime


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5/3600", Limit(5, 3600)),
        (" 3 / 60 ", Limit(3, 60)),
        ("0/3600", Limit(0, 3600)),  # no replies at all
        ("100000/86400", Limit(100000, 86400)),
    ],
)
def test_limits_are_read(value: str, expected: Limit) -> None:
    assert parse_limit(value, setting="KENGELE_REPLY_LIMIT") == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5/x", "KENGELE_REPLY_LIMIT: '5/x' is not COUNT/SECONDS"),
        ("5", "KENGELE_REPLY_LIMIT: '5' is not COUNT/SECONDS"),
        ("", "KENGELE_REPLY_LIMIT: '' is not COUNT/SECONDS"),
        ("-1/3600", "KENGELE_REPLY_LIMIT: '-1/3600' is not COUNT/SECONDS"),
        ("5/1h", "KENGELE_REPLY_LIMIT: '5/1h' is not COUNT/SECONDS"),
        ("5/3600/2", "KENGELE_REPLY_LIMIT: '5/3600/2' is not COUNT/SECONDS"),
        ("5/0", "KENGELE_REPLY_LIMIT: '5/0' has a window of 0 seconds"),
    ],
)
def test_bad_limits_are_refused_naming_the_setting(value: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        parse_limit(value, setting="KENGELE_REPLY_LIMIT")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("reply_limit", "5/x", "KENGELE_REPLY_LIMIT: '5/x' is not COUNT/SECONDS"),
        ("flood_limit", "three/3600", "KENGELE_FLOOD_LIMIT: 'three/3600' is not COUNT/SECONDS"),
        ("reply_countries", "CD,ZZ", "KENGELE_REPLY_COUNTRIES: 'ZZ' is not an ISO country code"),
        ("reply_countries", "Congo", "KENGELE_REPLY_COUNTRIES: 'CONGO' is not an ISO country code"),
    ],
)
def test_settings_refuse_bad_values_at_start(field: str, value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None, **{field: value})  # type: ignore[call-arg]


def test_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENGELE_REPLY_LIMIT", "2/60")
    monkeypatch.setenv("KENGELE_FLOOD_LIMIT", "1/600")
    monkeypatch.setenv("KENGELE_REPLY_COUNTRIES", " cd, cf ,ml")
    limits = Settings(_env_file=None).limits  # type: ignore[call-arg]
    assert (limits.reply, limits.flood) == (Limit(2, 60), Limit(1, 600))
    assert limits.countries is not None and limits.countries.configured == {"CD", "CF", "ML"}


def test_defaults() -> None:
    limits = Settings(_env_file=None).limits  # type: ignore[call-arg]
    assert (limits.reply, limits.flood) == (Limit(5, 3600), Limit(3, 3600))
    assert limits.countries is not None and limits.countries.configured is None


def test_country_lists_are_read() -> None:
    assert parse_countries("", setting="X") == frozenset()
    assert parse_countries("cd,CF, ml,,", setting="X") == {"CD", "CF", "ML"}


def test_default_countries_are_the_region_the_roster_and_the_gazetteer(
    make_settings: Callable[..., Settings],
) -> None:
    runtime = Runtime(make_settings())
    try:
        with transaction(runtime.factory) as session:
            session.add(Place(name="Bangui", name_norm="bangui", lat=4.36, lon=18.55, country="CF"))
            session.add(Person(name="Officer UG", phone="+256700000001", role="officer", level=1))
        countries = ReplyCountries(configured=None, region="CD", every=0)
        with runtime.factory() as session:
            assert countries.allowed(session) == {"CD", "CF", "UG"}
            assert countries.covers(session, "+236700000001")  # CAR
            assert not countries.covers(session, "+4915112345678")
    finally:
        runtime.stop()
