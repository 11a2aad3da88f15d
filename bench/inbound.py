"""Inbound load: the real `kengele serve` (SQLite, console gateway) against a bare FastAPI endpoint.

Both servers run in their own process, the generator in a third, all on loopback; the same
generator measures both, alternately, in the same run (this machine is shared and noisy, so each
figure is the median of several rounds). Kengele's webhooks are signed (TWILIO_AUTH_TOKEN set),
each with its own MessageSid; after the run the database must hold one row per 2xx answer, and
every message must be processed (parsed, alert or command, reply sent).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import ColumnElement, Engine

from app.models import Message
from bench.common import any_message, count_messages, expect, reader, scratch
from tests.server import Server, free_port

TOKEN = "bench-twilio-token-0123456789abcdef"
PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def run_loadgen(url: str, *extra: str) -> dict[str, float]:
    out = subprocess.run(
        [PY, "-m", "bench.loadgen", "--url", url, "--token", TOKEN, *extra],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    expect(out.returncode == 0, f"the load generator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@contextmanager
def bare_server() -> Iterator[str]:
    """The yardstick in its own process, served as Kengele is; its webhook URL."""
    port = free_port()
    argv = [PY, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/webhooks/twilio/sms"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, timeout=1)
                break
            except httpx.HTTPError:
                expect(proc.poll() is None and time.monotonic() < deadline, "the bare endpoint did not start")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "errors")}


def line(name: str, r: dict[str, float]) -> str:
    return f"  {name:<36} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7.0f}"


INBOUND = Message.direction == "inbound"
UNPROCESSED = (INBOUND, Message.processed_at.is_(None))
UNSENT = (Message.direction == "outbound", Message.status.in_(("queued", "sending")))


def wait_until_none(db: Engine, where: tuple[ColumnElement[bool], ...], since: float, limit: float) -> float:
    """Seconds from `since` until no row matches `where` (or `limit` has passed)."""
    while any_message(db, *where) and time.monotonic() - since < limit:
        time.sleep(0.2)
    return time.monotonic() - since


def main(
    requests: int = 20000,
    concurrency: int = 32,
    rate: float = 500.0,
    seconds: float = 10.0,
    rounds: int = 3,
    warmup: int = 500,
    wait: float = 300.0,
) -> dict[str, object]:
    extra = os.environ.get("BENCH_ARGS", "").split()
    closed = ["--requests", str(requests), "--concurrency", str(concurrency)]
    steady = ["--rate", str(rate), "--seconds", str(seconds)]
    k_closed, b_closed, k_open, b_open = [], [], [], []
    with scratch("inbound") as workdir, bare_server() as bare_url:
        url = f"sqlite:///{workdir / 'bench.db'}"
        server = Server(url, workdir, *extra, TWILIO_AUTH_TOKEN=TOKEN)
        db = reader(url)
        try:
            webhook = server.start().url + "/webhooks/twilio/sms"
            warm = ["--requests", str(warmup), "--concurrency", "8"]
            run_loadgen(webhook, *warm)
            run_loadgen(bare_url, *warm, "--bare")
            before = count_messages(db, INBOUND)
            for _ in range(max(1, rounds - 1)):
                k_open.append(run_loadgen(webhook, *steady))
                b_open.append(run_loadgen(bare_url, *steady, "--bare"))
            for _ in range(rounds):
                k_closed.append(run_loadgen(webhook, *closed))
                b_closed.append(run_loadgen(bare_url, *closed, "--bare"))
            answered = int(sum(r["ok"] for r in k_closed + k_open))
            committed = count_messages(db, INBOUND) - before
            load_end = time.monotonic()
            drained = wait_until_none(db, UNPROCESSED, load_end, wait)
            unprocessed = count_messages(db, *UNPROCESSED)
            replied = wait_until_none(db, UNSENT, load_end, 2 * wait)
            unsent = count_messages(db, *UNSENT)
            replies = count_messages(db, Message.direction == "outbound")
        finally:
            db.dispose()
            server.stop()
        kc, bc, ko, bo = median(k_closed), median(b_closed), median(k_open), median(b_open)
        ratio = kc["rps"] / bc["rps"] if bc["rps"] else float("nan")
        print(
            f"inbound webhooks: {os.cpu_count()} cores, SQLite, console gateway, generator on this machine;"
        )
        print(
            f"medians of {rounds} rounds of {requests} requests (closed loop),"
            f" {len(k_open)} of {seconds:g} s (fixed rate)"
        )
        print(f"  {'':<36} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        print(line(f"kengele, signed twilio, c={concurrency}", kc))
        print(line(f"bare fastapi, c={concurrency}", bc))
        print(line(f"kengele, signed twilio, {rate:g}/s", ko))
        print(line(f"bare fastapi, {rate:g}/s", bo))
        print(f"  kengele / bare throughput: {ratio:.2f}")
        print(f"  answered 2xx: {answered}, rows committed: {committed} (must be equal)")
        print(
            f"  processing finished {drained:.1f} s after the load (unprocessed: {unprocessed}); "
            f"replies sent {replied:.1f} s after it (unsent: {unsent})"
        )
        sent = (len(k_closed) * requests) + int(sum(r["requests"] for r in k_open))
        errors = int(sum(r["errors"] for r in k_closed + k_open + b_closed + b_open))
        expect(
            answered == sent and errors == 0, f"{answered} of {sent} webhooks answered 2xx, {errors} errors"
        )
        expect(committed == answered, f"{committed} rows committed for {answered} webhooks answered 2xx")
        expect(unprocessed == 0, f"{unprocessed} messages still unprocessed {wait:g} s after the load")
        expect(unsent == 0 and replies > 0, f"{replies} replies queued, {unsent} unsent after the load")
    return {
        "kengele_closed": kc,
        "bare_closed": bc,
        "kengele_rate": ko,
        "bare_rate": bo,
        "ratio": ratio,
        "answered": answered,
        "committed": committed,
        "drained_s": drained,
        "replied_s": replied,
    }


def smoke() -> dict[str, object]:
    return main(requests=300, concurrency=8, rate=100.0, seconds=1.0, rounds=1, warmup=50, wait=30.0)


if __name__ == "__main__":
    main()
