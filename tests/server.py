"""Run the real `kengele serve` in a child process, as providers and operators meet it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
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
    def __init__(self, db_url: str, workdir: Path, *args: str, **env: str) -> None:
        self.args = list(args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.env = environment(db_url, self.url, **env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"serve-{self.port}.log"
        LOGS.append(self.log)

    def start(self, timeout: float = 30.0) -> Server:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [KENGELE, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
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


class WorkerProcess:
    """The real `kengele worker` (processing sweeps, sending, scheduling; no HTTP) in a child process."""

    def __init__(self, db_url: str, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.env = environment(db_url, env.pop("KENGELE_PUBLIC_URL", "http://127.0.0.1:8000"), **env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"worker-{uuid.uuid4().hex[:8]}.log"
        LOGS.append(self.log)

    def start(self, settle: float = 1.0) -> WorkerProcess:
        """Start it, and see it still running `settle` seconds later (it answers nothing to ask)."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [KENGELE, "worker"],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.proc.wait(settle)
        except subprocess.TimeoutExpired:
            return self
        raise RuntimeError(f"worker exited: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
