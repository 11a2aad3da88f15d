"""Run the real `kengele serve` in a child process, as providers and operators meet it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KENGELE = str(Path(sys.executable).parent / "kengele")
# Every log file a server of this run wrote: the session's log check reads them all (conftest).
LOGS: list[Path] = []
# The key every test encrypts phone numbers under (tests that are about keys choose their own).
TEST_SECRET_KEY = "kengele-test-key-5f1d0c9e8b7a6f5e4d3c2b1a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(db_url: str, public_url: str, **env: str) -> dict[str, str]:
    """The environment of a child `kengele` process: none of the test runner's own settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KENGELE_", "TWILIO_", "AT_"))}
    return base | {
        "KENGELE_DATABASE_URL": db_url,
        "KENGELE_PUBLIC_URL": public_url,
        "KENGELE_GATEWAY": "console",
        "KENGELE_LOG_LEVEL": "WARNING",
        "KENGELE_DISPATCH_POLL": "0.1",
        "KENGELE_SECRET_KEY": TEST_SECRET_KEY,
        **env,
    }


class Server:
    """`kengele serve` on a free loopback port; `start()` returns once /readyz answers 200."""

    command = "serve"

    def __init__(self, db_url: str, workdir: Path, *args: str, **env: str) -> None:
        self.args = list(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = environment(db_url, self.url, **env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{self.command}-{self.port}.log"
        LOGS.append(self.log)

    def argv(self) -> list[str]:
        return [KENGELE, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args]

    def spawn(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self, timeout: float = 30.0) -> Server:
        self.spawn()
        return self.ready(timeout)

    def ready(self, timeout: float = 30.0) -> Server:
        """Wait for /readyz to answer 200 (the process spawned already)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready in time")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as in a power cut or an OOM kill."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class WorkerProcess(Server):
    """`kengele worker`: scheduler, processor sweep and dispatcher, no HTTP (`url` is unused).

    `start()` returns once the process has run for `settle` seconds without exiting: it has no
    endpoint to ask whether it is ready.
    """

    command = "worker"

    def argv(self) -> list[str]:
        return [KENGELE, "worker", *self.args]

    def start(self, timeout: float = 30.0, settle: float = 1.0) -> Server:
        self.spawn()
        return self.ready(timeout, settle)

    def ready(self, timeout: float = 30.0, settle: float = 1.0) -> Server:
        assert self.proc is not None
        try:
            self.proc.wait(settle)
        except subprocess.TimeoutExpired:
            return self
        raise RuntimeError(f"worker exited: {self.log.read_text()[-2000:]}")


def start_all(*processes: Server) -> None:
    """Start every process at once (each takes a second or two to be ready), then wait for each."""
    for process in processes:
        process.spawn()
    for process in processes:
        process.ready()
