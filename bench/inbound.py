"""Inbound load: the real `kengele serve` (SQLite, console gateway) against a bare FastAPI endpoint.

Both servers run in their own process, the generator in a third, all on loopback; the same
generator measures both in the same run. Kengele's webhooks are signed (TWILIO_AUTH_TOKEN set),
each with its own MessageSid; after the run the database must hold one row per 2xx answer.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.server import Server, free_port

TOKEN = "bench-twilio-token-0123456789abcdef"
PY = sys.executable


def run_loadgen(url: str, *extra: str) -> dict[str, float]:
    out = subprocess.run(
        [PY, "-m", "bench.loadgen", "--url", url, "--token", TOKEN, *extra],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def start_bare(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "uvicorn",
            "bench.bare_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.post(url + "/webhooks/twilio/sms", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url + "/webhooks/twilio/sms"


def stored(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM messages WHERE direction = 'inbound'").fetchone()[0])


def row(name: str, r: dict[str, float]) -> str:
    return f"  {name:<34} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>7.0f}"


def main(
    requests: int = 20000, concurrency: int = 32, rate: float = 500.0, seconds: float = 10.0
) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="kengele-bench-"))
    db = workdir / "bench.db"
    server = Server(
        f"sqlite:///{db}", workdir, *os.environ.get("BENCH_ARGS", "").split(), TWILIO_AUTH_TOKEN=TOKEN
    ).start()
    bare, bare_url = start_bare(workdir)
    url = server.url + "/webhooks/twilio/sms"
    try:
        run_loadgen(url, "--requests", "500", "--concurrency", "8")  # warm-up
        run_loadgen(bare_url, "--requests", "500", "--concurrency", "8", "--bare")
        before = stored(db)
        k_closed = run_loadgen(url, "--requests", str(requests), "--concurrency", str(concurrency))
        committed = stored(db) - before
        b_closed = run_loadgen(
            bare_url, "--requests", str(requests), "--concurrency", str(concurrency), "--bare"
        )
        time.sleep(2)
        k_open = run_loadgen(url, "--rate", str(rate), "--seconds", str(seconds))
        b_open = run_loadgen(bare_url, "--rate", str(rate), "--seconds", str(seconds), "--bare")
    finally:
        server.stop()
        bare.terminate()
        bare.wait(10)
    print(
        f"inbound webhooks ({os.cpu_count()} cores, SQLite, console gateway, generator on the same machine)"
    )
    print(f"  {'':<34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    print(row(f"kengele signed twilio, c={concurrency}", k_closed))
    print(row(f"bare fastapi, c={concurrency}", b_closed))
    print(row(f"kengele signed twilio, {rate:.0f}/s", k_open))
    print(row(f"bare fastapi, {rate:.0f}/s", b_open))
    ratio = k_closed["rps"] / b_closed["rps"] if b_closed["rps"] else float("nan")
    print(f"  committed rows for {k_closed['ok']:.0f} answers 2xx: {committed}  (must be equal)")
    print(f"  kengele / bare throughput: {ratio:.2f}")
    return {
        "kengele_closed": k_closed,
        "bare_closed": b_closed,
        "kengele_open": k_open,
        "bare_open": b_open,
        "committed": committed,
        "ratio": ratio,
    }


if __name__ == "__main__":
    main()
