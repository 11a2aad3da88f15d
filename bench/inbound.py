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
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.server import Server, free_port

TOKEN = "bench-twilio-token-0123456789abcdef"
PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def run_loadgen(url: str, *extra: str) -> dict[str, float]:
    out = subprocess.run(
        [PY, "-m", "bench.loadgen", "--url", url, "--token", TOKEN, *extra],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def start_bare() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [PY, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/webhooks/twilio/sms"
    for _ in range(100):
        try:
            httpx.post(url, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url


def count(db: Path, where: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM messages WHERE {where}").fetchone()[0])


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms", "errors")}


def line(name: str, r: dict[str, float]) -> str:
    return f"  {name:<36} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7.0f}"


def main(
    requests: int = 20000, concurrency: int = 32, rate: float = 500.0, seconds: float = 10.0, rounds: int = 3
) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="kengele-bench-"))
    db = workdir / "bench.db"
    extra = os.environ.get("BENCH_ARGS", "").split()
    server = Server(f"sqlite:///{db}", workdir, *extra, TWILIO_AUTH_TOKEN=TOKEN).start()
    bare, bare_url = start_bare()
    url = server.url + "/webhooks/twilio/sms"
    closed = ["--requests", str(requests), "--concurrency", str(concurrency)]
    steady = ["--rate", str(rate), "--seconds", str(seconds)]
    k_closed, b_closed, k_open, b_open = [], [], [], []
    answered = 0
    replied = float("nan")
    try:
        run_loadgen(url, "--requests", "500", "--concurrency", "8")  # warm-up
        run_loadgen(bare_url, "--requests", "500", "--concurrency", "8", "--bare")
        before = count(db, "direction = 'inbound'")
        for _ in range(max(1, rounds - 1)):
            k_open.append(run_loadgen(url, *steady))
            b_open.append(run_loadgen(bare_url, *steady, "--bare"))
        for _ in range(rounds):
            k_closed.append(run_loadgen(url, *closed))
            b_closed.append(run_loadgen(bare_url, *closed, "--bare"))
        answered = int(sum(r["ok"] for r in k_closed + k_open))
        committed = count(db, "direction = 'inbound'") - before
        load_end = time.monotonic()
        while (
            count(db, "direction = 'inbound' AND processed_at IS NULL") and time.monotonic() - load_end < 300
        ):
            time.sleep(0.5)
        drained = time.monotonic() - load_end
        unprocessed = count(db, "direction = 'inbound' AND processed_at IS NULL")
        pending = "direction = 'outbound' AND status IN ('queued', 'sending')"
        while count(db, pending) and time.monotonic() - load_end < 600:
            time.sleep(0.5)
        replied = time.monotonic() - load_end
        unsent = count(db, pending)
    finally:
        server.stop()
        bare.terminate()
        bare.wait(10)
    kc, bc, ko, bo = median(k_closed), median(b_closed), median(k_open), median(b_open)
    ratio = kc["rps"] / bc["rps"] if bc["rps"] else float("nan")
    print(f"inbound webhooks: {os.cpu_count()} cores, SQLite, console gateway, generator on this machine;")
    print(
        f"medians of {rounds} rounds of {requests} requests (closed loop),"
        f" {len(k_open)} of {seconds:.0f} s (fixed rate)"
    )
    print(f"  {'':<36} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    print(line(f"kengele, signed twilio, c={concurrency}", kc))
    print(line(f"bare fastapi, c={concurrency}", bc))
    print(line(f"kengele, signed twilio, {rate:.0f}/s", ko))
    print(line(f"bare fastapi, {rate:.0f}/s", bo))
    print(f"  kengele / bare throughput: {ratio:.2f}")
    print(f"  answered 2xx: {answered}, rows committed: {committed} (must be equal)")
    print(
        f"  processing finished {drained:.1f} s after the load (unprocessed: {unprocessed}); "
        f"replies sent {replied:.1f} s after it (unsent: {unsent})"
    )
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


if __name__ == "__main__":
    main()
