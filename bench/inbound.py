"""Inbound load: the real `kengele serve` (console gateway) against a bare FastAPI endpoint.

Three shapes, in the same run: SQLite with one `kengele serve`; PostgreSQL with one; PostgreSQL
with two web replicas (`serve --no-scheduler --no-dispatcher`) and one `kengele worker`, the
production shape of docs/scaling.md, the load split evenly between the replicas (a proxy's
round robin). Servers run in their own processes, the generators in others, all on loopback; the
same generator measures the bare endpoint between Kengele's rounds (this machine is shared and
noisy, so each figure is the median of several rounds). Kengele's webhooks are signed
(TWILIO_AUTH_TOKEN set), each with its own MessageSid; after the run the database must hold one
row per 2xx answer, and every message must be processed (parsed, alert or command, reply sent).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import ColumnElement, Engine

from app.db import upgrade
from app.models import Message
from bench.common import (
    any_message,
    count_messages,
    expect,
    postgres_database,
    postgres_reachable,
    postgres_required,
    reader,
    scratch,
)
from tests.server import Server, WorkerProcess, free_port

TOKEN = "bench-twilio-token-0123456789abcdef"
PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def run_loadgen(url: str, *extra: str) -> dict[str, float]:
    return run_loadgens([url], *extra)


def run_loadgens(urls: list[str], *extra: str) -> dict[str, float]:
    """One generator per URL, at once, each with an equal share of the load; their sum.

    Throughput is every answer over the longest generator's time; latencies are the worse of them.
    """
    share = list(extra)
    for flag in ("--requests", "--concurrency", "--rate"):
        if flag in share:
            i = share.index(flag) + 1
            value = float(share[i]) / len(urls)
            share[i] = str(int(value)) if flag != "--rate" else f"{value:g}"
    procs = [
        subprocess.Popen(
            [PY, "-m", "bench.loadgen", "--url", url, "--token", TOKEN, *share],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for url in urls
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        expect(proc.returncode == 0, f"the load generator failed: {err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    seconds = max(r["seconds"] for r in results)
    total = {k: sum(r[k] for r in results) for k in ("requests", "ok", "errors")}
    worst = {k: max(r[k] for r in results) for k in ("p50_ms", "p99_ms", "max_ms")}
    return total | worst | {"seconds": seconds, "rps": total["ok"] / seconds if seconds else 0.0}


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
    return f"  {name:<44} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7.0f}"


INBOUND = Message.direction == "inbound"
UNPROCESSED = (INBOUND, Message.processed_at.is_(None))
UNSENT = (Message.direction == "outbound", Message.status.in_(("queued", "sending")))


def wait_until_none(db: Engine, where: tuple[ColumnElement[bool], ...], since: float, limit: float) -> float:
    """Seconds from `since` until no row matches `where` (or `limit` has passed)."""
    while any_message(db, *where) and time.monotonic() - since < limit:
        time.sleep(0.2)
    return time.monotonic() - since


@dataclass(frozen=True)
class Shape:
    """How Kengele is run for one set of rounds."""

    label: str
    database: str  # sqlite | postgresql
    webs: int  # web processes; with 2, a worker does the scheduling and sending


SHAPES = [
    Shape("SQLite, 1 serve", "sqlite", 1),
    Shape("PostgreSQL, 1 serve", "postgresql", 1),
    Shape("PostgreSQL, 2 web + worker", "postgresql", 2),
]


@contextmanager
def database(shape: Shape, workdir: Path) -> Iterator[str | None]:
    """The shape's empty, migrated database (its URL); None when PostgreSQL is out of reach."""
    if shape.database == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    if not postgres_reachable():
        expect(not postgres_required(), "PostgreSQL is not reachable (KENGELE_TEST_REQUIRE_PG=1)")
        yield None
        return
    with postgres_database(f"inbound{shape.webs}") as url:
        upgrade(url)
        yield url


def start(shape: Shape, url: str, workdir: Path, extra: list[str], stack: ExitStack) -> list[str]:
    """Start the shape's processes (stopped when `stack` closes); the webhook URL of each web process."""
    env = {"TWILIO_AUTH_TOKEN": TOKEN}
    if shape.webs == 1:
        servers = [Server(url, workdir, *extra, **env)]
    else:
        args = ["--no-scheduler", "--no-dispatcher", *extra]
        servers = [Server(url, workdir, *args, **env) for _ in range(shape.webs)]
        worker = WorkerProcess(url, workdir, **env)
        stack.callback(worker.stop)
        worker.start()
    for server in servers:
        stack.callback(server.stop)
        server.start()
    return [server.url + "/webhooks/twilio/sms" for server in servers]


@dataclass
class Measured:
    shape: Shape
    closed: dict[str, float]
    steady: dict[str, float]
    bare_closed: dict[str, float]
    bare_steady: dict[str, float]
    answered: int
    committed: int
    backlog: int  # messages not yet processed when the load ended
    drained: float
    replied: float

    @property
    def processing_rate(self) -> float:
        """Messages processed a second after the load, while the backlog lasted."""
        return self.backlog / self.drained if self.drained > 0 else float("nan")


def measure(
    shape: Shape,
    url: str,
    workdir: Path,
    bare_url: str,
    *,
    closed: list[str],
    steady: list[str],
    rounds: int,
    warmup: int,
    wait: float,
    extra: list[str],
) -> Measured:
    """Alternate rounds of Kengele in `shape` and of the bare endpoint; check that nothing was lost."""
    k_closed, b_closed, k_open, b_open = [], [], [], []
    db = reader(url)
    try:
        with ExitStack() as stack:
            webhooks = start(shape, url, workdir, extra, stack)
            warm = ["--requests", str(warmup * len(webhooks)), "--concurrency", str(8 * len(webhooks))]
            run_loadgens(webhooks, *warm)
            run_loadgen(bare_url, *warm, "--bare")
            before = count_messages(db, INBOUND)
            for _ in range(max(1, rounds - 1)):
                k_open.append(run_loadgens(webhooks, *steady))
                b_open.append(run_loadgen(bare_url, *steady, "--bare"))
            for _ in range(rounds):
                k_closed.append(run_loadgens(webhooks, *closed))
                b_closed.append(run_loadgen(bare_url, *closed, "--bare"))
            answered = int(sum(r["ok"] for r in k_closed + k_open))
            committed = count_messages(db, INBOUND) - before
            load_end = time.monotonic()
            backlog = count_messages(db, *UNPROCESSED)
            drained = wait_until_none(db, UNPROCESSED, load_end, wait)
            unprocessed = count_messages(db, *UNPROCESSED)
            replied = wait_until_none(db, UNSENT, load_end, 2 * wait)
            unsent = count_messages(db, *UNSENT)
            replies = count_messages(db, Message.direction == "outbound")
    finally:
        db.dispose()
    sent = int(sum(r["requests"] for r in k_closed + k_open))
    errors = int(sum(r["errors"] for r in k_closed + k_open + b_closed + b_open))
    where = shape.label
    expect(
        answered == sent and errors == 0,
        f"{where}: {answered} of {sent} webhooks answered 2xx, {errors} errors",
    )
    expect(committed == answered, f"{where}: {committed} rows committed for {answered} webhooks answered 2xx")
    expect(unprocessed == 0, f"{where}: {unprocessed} messages still unprocessed {wait:g} s after the load")
    expect(unsent == 0 and replies > 0, f"{where}: {replies} replies queued, {unsent} unsent after the load")
    return Measured(
        shape,
        median(k_closed),
        median(k_open),
        median(b_closed),
        median(b_open),
        answered,
        committed,
        backlog,
        drained,
        replied,
    )


def main(
    requests: int = 6000,
    concurrency: int = 32,
    rate: float = 500.0,
    seconds: float = 5.0,
    rounds: int = 3,
    warmup: int = 500,
    wait: float = 300.0,
) -> dict[str, object]:
    extra = os.environ.get("BENCH_ARGS", "").split()
    closed = ["--requests", str(requests), "--concurrency", str(concurrency)]
    steady = ["--rate", str(rate), "--seconds", str(seconds)]
    results: list[Measured] = []
    with scratch("inbound") as workdir, bare_server() as bare_url:
        for shape in SHAPES:
            with database(shape, workdir) as url:
                if url is None:
                    print(f"  {shape.label}: PostgreSQL not reachable, skipped")
                    continue
                results.append(
                    measure(
                        shape,
                        url,
                        workdir,
                        bare_url,
                        closed=closed,
                        steady=steady,
                        rounds=rounds,
                        warmup=warmup,
                        wait=wait,
                        extra=extra,
                    )
                )
    print(
        f"inbound webhooks: {os.cpu_count()} cores, console gateway, generators on this machine; medians of"
        f" {rounds} rounds of {requests} requests (closed loop, c={concurrency} in all),"
        f" {max(1, rounds - 1)} of {seconds:g} s at {rate:g}/s in all (fixed rate); the bare endpoint"
        " measured between Kengele's rounds"
    )
    print(f"  {'':<44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for m in results:
        print(line(f"{m.shape.label}, c={concurrency}", m.closed))
        print(line(f"{m.shape.label}, {rate:g}/s", m.steady))
    bare_closed = median([m.bare_closed for m in results])
    bare_steady = median([m.bare_steady for m in results])
    print(line(f"bare fastapi, c={concurrency}", bare_closed))
    print(line(f"bare fastapi, {rate:g}/s", bare_steady))
    sqlite = next((m for m in results if m.shape.database == "sqlite"), None)
    for m in results:
        ratios = f"/ bare {m.closed['rps'] / m.bare_closed['rps']:.2f}"
        if sqlite is not None and m is not sqlite:
            ratios += f", / SQLite {m.closed['rps'] / sqlite.closed['rps']:.2f}"
        print(
            f"  {m.shape.label}: throughput {ratios}; answered 2xx {m.answered} = committed {m.committed};"
            f" the {m.backlog} left unprocessed at the end of the load processed in {m.drained:.1f} s"
            f" ({m.processing_rate:.0f}/s), replies sent {m.replied:.1f} s after it"
        )
    return {m.shape.label: m for m in results}


def smoke() -> dict[str, object]:
    return main(requests=300, concurrency=8, rate=100.0, seconds=1.0, rounds=1, warmup=50, wait=30.0)


if __name__ == "__main__":
    main()
