"""SIGKILL at random moments of a replay of inbound SMS: nothing answered 2xx is lost, nothing sent twice.

A provider replays the messages (retrying every post that got no 2xx until it gets one); the
server is killed and restarted on the same database and port. At the end every message answered
2xx is stored and processed, every outbox row was sent through the Twilio SDK to the fake Twilio
API, and an SMS went out twice only where its send was in flight at a kill.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakes import start_fake
from tests.faults.replay import (
    FIGURES,
    ORPHAN_DETAILS,
    SENDS_IN_FLIGHT,
    Replay,
    figures,
    kill_during,
    load_corpus_network,
    messages_to_replay,
    settled,
    twilio_server,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


def run(
    name: str, db_url: str, workdir: Path, *, messages: int, kills: int, seed: int, timeout: float
) -> None:
    """Replay `messages` with `kills` SIGKILLs, record the figures under `name`, then check them."""
    fake = start_fake("twilio")
    server = twilio_server(db_url, workdir, fake)
    replay = Replay(server.url + "/webhooks/twilio/sms", messages_to_replay(messages, seed))
    try:
        load_corpus_network(server)
        server.start()
        replay.start()
        kill_times = kill_during(server, replay, kills, seed, timeout)
        replay.join(timeout)
        wait_for(lambda: settled(db_url), timeout=timeout, interval=0.5)
        server.stop()
        result = figures(db_url=db_url, replay=replay, fake=fake, kill_times=kill_times)
    finally:
        replay.stop()
        server.stop()
        fake.stop()
    FIGURES.append(f"{name}: {result.line()}")
    assert result.answered == result.replayed
    assert result.stored == result.processed == result.answered
    assert result.lost == 0
    assert result.failed == 0
    assert result.sent == result.outbox > 0
    assert result.orphans_outside_kills == 0, (
        "an SMS was sent twice without a kill during its send: " + "; ".join(ORPHAN_DETAILS)
    )
    assert result.phantoms == 0, "an SMS went out that no outbox row asked for"
    assert result.duplicates <= result.kills * SENDS_IN_FLIGHT
    assert result.server_errors == 0


def test_kills_during_replay(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> None:
    """600 messages, 3 kills (KENGELE_FAULT_MESSAGES and KENGELE_FAULT_KILLS choose others)."""
    messages = int(os.environ.get("KENGELE_FAULT_MESSAGES", "600"))
    kills = int(os.environ.get("KENGELE_FAULT_KILLS", "3"))
    run(request.node.name, db_url, tmp_path, messages=messages, kills=kills, seed=14, timeout=120)


@pytest.mark.fault_long
def test_kills_during_long_replay(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> None:
    """10,000 messages, 20 kills: run by .ci/run (`pytest -m fault_long tests/faults`)."""
    run(request.node.name, db_url, tmp_path, messages=10_000, kills=20, seed=1414, timeout=900)
