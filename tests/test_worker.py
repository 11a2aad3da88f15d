"""The shape every background loop shares: a failed pass is logged and backed off, a dead one is seen."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.services.runtime import Runtime
from app.services.worker import BACKOFF_CAP, Pass, Signals, Worker, backoff
from tests.helpers import wait_for


class Flaky(Worker):
    """Fails its first `failures` passes, then idles."""

    name = "flaky"

    def __init__(self, *, failures: int) -> None:
        super().__init__(signals=Signals(), every=5.0, retry=0.02)
        self.failures = failures
        self.passes: list[float] = []

    def step(self) -> Pass:
        self.passes.append(time.monotonic())
        if len(self.passes) <= self.failures:
            raise RuntimeError("database unreachable")
        return Pass.IDLE


def test_backoff_doubles_up_to_a_bound() -> None:
    assert [backoff(1.0, n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, BACKOFF_CAP]
    assert backoff(30.0, 3) == 30.0  # a worker whose period is longer keeps its period
    assert backoff(1.0, 100_000) == BACKOFF_CAP


def test_a_failed_pass_is_logged_by_name_and_backed_off(caplog: pytest.LogCaptureFixture) -> None:
    worker = Flaky(failures=3)
    with caplog.at_level(logging.ERROR, logger="kengele.worker"):
        worker.start()
        try:
            wait_for(lambda: len(worker.passes) == 4)
            assert worker.alive
            worker.notify()  # an idle worker is woken for its next pass
            wait_for(lambda: len(worker.passes) == 5)
        finally:
            worker.stop()
    assert not worker.alive
    gaps = [b - a for a, b in zip(worker.passes, worker.passes[1:4], strict=False)]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.08
    failed = [r for r in caplog.records if r.getMessage() == "flaky pass failed"]
    assert [r.failures for r in failed] == [1, 2, 3]  # type: ignore[attr-defined]
    assert all(r.exc_info for r in failed)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_readiness_names_a_dead_worker(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = Runtime(make_settings())

    monkeypatch.setattr(runtime.dispatcher, "step", lambda: Pass.DONE)  # its thread ends at once
    with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
        wait_for(lambda: runtime.dead_parts() == ["dispatcher"])
        r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["detail"] == "dispatcher not running"
