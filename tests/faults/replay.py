"""A provider's replay of inbound SMS against a real server, and the kills that interrupt it.

The replay posts signed Twilio webhooks drawn from the public corpus (alerts, unknown texts,
check-in answers) from a few threads, and retries every post that got no 2xx, as a provider
does, until each message is answered 2xx. The killer SIGKILLs the server at random moments of
the replay and restarts it on the same database and port. The dispatcher sends through the
Twilio SDK to the fake Twilio API, whose log (arrival time, answered id) is set against the
outbox rows and the kill times.
"""

from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import func, select

from app.enums import Direction, MessageStatus
from app.models import Message
from tests.fakes import FakeProvider
from tests.helpers import TWILIO_TOKEN, engine, signed_headers, twilio_form
from tests.server import KENGELE, Server

CORPUS = Path(__file__).parent.parent / "corpus"
TWILIO_SID = "AC" + "1" * 32
TWILIO_FROM = "+15005550006"
# One line of figures per fault run, printed at the end of the session (tests/faults/conftest.py).
FIGURES: list[str] = []
ORPHAN_DETAILS: list[str] = []
# The dispatcher of the server under test: 4 parallel sends, a claim of at most
# concurrency x lease / (2 x timeout) = 4 rows a pass (app/services/outbox.py), taken over 10 s
# after a kill. A kill repeats at most the sends of one claim: those answered, not yet recorded.
# The timeout is generous: on a loaded machine a send that times out is sent again (as it must
# be), and that repetition would hide among the kills' own.
SEND_CONCURRENCY, SEND_LEASE, SEND_TIMEOUT = 4, 10, 5
SENDS_IN_FLIGHT = SEND_CONCURRENCY * SEND_LEASE // (2 * SEND_TIMEOUT)
# An orphan send (the fake answered, no outbox row holds its id) must have arrived at most this
# long before a kill: its outcome is written as soon as the answer is read, so a send further
# back was not in flight at the kill and its repetition is a bug.
IN_FLIGHT_WINDOW = SEND_TIMEOUT + 5.0
# ... or a moment after the kill's time: what the process wrote to its socket before it died, the
# fake reads (and timestamps) a little later. A restarted server sends nothing for seconds.
READ_LAG = 0.5
# Intents the replay draws from: the corpus's commands naming an incident code ({E1}) are left out.
REPLAYED = {"alert", "unknown", "checkin", "help"}


def corpus_texts() -> list[tuple[str, str]]:
    """(sender, text) of every corpus message the replay may send."""
    out = []
    for line in (CORPUS / "messages.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if item["expect"].get("intent") in REPLAYED and "{" not in item["text"]:
            out.append((item["sender"], item["text"]))
    return out


def messages_to_replay(n: int, seed: int) -> list[dict[str, str]]:
    """`n` Twilio forms: corpus texts from roster senders, and one in five from a stranger's phone."""
    rng = random.Random(seed)
    texts = corpus_texts()
    forms = []
    for i in range(n):
        sender, text = rng.choice(texts)
        if rng.random() < 0.2:
            sender = f"+24382{rng.randrange(10**7):07d}"
        forms.append(twilio_form(sender=sender, body=text, sid=f"SM{seed:04d}{i:06d}" + "0" * 20))
    return forms


def load_corpus_network(server: Server) -> None:
    """Import the corpus's gazetteer and roster with the CLI, into the server's database."""
    for args in (("gazetteer", "import", "gazetteer.csv"), ("roster", "import", "roster.csv")):
        subprocess.run(
            [KENGELE, *args[:2], str(CORPUS / args[2])],
            cwd=server.workdir,
            env=server.env,
            capture_output=True,  # the roster's lines name people: kept out of the logs
            check=True,
            timeout=120,
        )


def twilio_server(db_url: str, workdir: Path, fake: FakeProvider) -> Server:
    """A `kengele serve` that takes signed Twilio webhooks and sends through the fake Twilio API."""
    return Server(
        db_url,
        workdir,
        KENGELE_GATEWAY="twilio",
        TWILIO_ACCOUNT_SID=TWILIO_SID,
        TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        TWILIO_FROM=TWILIO_FROM,
        KENGELE_TWILIO_API_BASE=fake.url,
        # A Twilio long code sends 1 SMS/s; the fake takes the replay's thousands as fast as they come.
        KENGELE_SEND_RATE="twilio=1000",
        KENGELE_SEND_TIMEOUT=str(SEND_TIMEOUT),
        KENGELE_DISPATCH_CONCURRENCY=str(SEND_CONCURRENCY),
        KENGELE_SEND_BACKOFF_BASE="0.2",
        KENGELE_SEND_BACKOFF_MAX="1",
        # Rows a killed process held are taken over soon after the restart.
        KENGELE_SEND_LEASE=str(SEND_LEASE),
        KENGELE_PROCESSING_LEASE="3",
    )


@dataclass
class Replay:
    """Posts every form until it is answered 2xx, from `threads` threads, retrying as a provider."""

    url: str
    forms: list[dict[str, str]]
    threads: int = 8
    answered: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)  # every answer that was not 2xx
    connection_errors: int = 0
    posts: int = 0
    started: float = 0.0
    finished: float = 0.0  # when the last message was answered 2xx (time.monotonic())
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._next = iter(self.forms)
        self._stopping = threading.Event()
        self._httpx_level = logging.NOTSET
        self._workers = [threading.Thread(target=self._post_all, daemon=True) for _ in range(self.threads)]

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def start(self) -> Replay:
        # httpx logs every request at INFO: tens of thousands of lines in the session's log.
        self._httpx_level = logging.getLogger("httpx").level
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.started = time.monotonic()
        for worker in self._workers:
            worker.start()
        return self

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        assert not any(w.is_alive() for w in self._workers), (
            f"replay unfinished: {len(self.answered)} answered"
        )

    def stop(self) -> None:
        """Give up on what is not answered yet (a failed run): the threads end after their post."""
        self._stopping.set()
        logging.getLogger("httpx").setLevel(self._httpx_level)

    def _take(self) -> dict[str, str] | None:
        with self.lock:
            return None if self._stopping.is_set() else next(self._next, None)

    def _post_all(self) -> None:
        with httpx.Client(timeout=5) as client:
            while (form := self._take()) is not None:
                self._post_until_answered(client, form)
        with self.lock:
            self.finished = time.monotonic()  # the last thread to end writes last

    def _post_until_answered(self, client: httpx.Client, form: dict[str, str]) -> None:
        headers = signed_headers(form, self.url)
        delay = 0.05
        while not self._stopping.is_set():
            try:
                status = client.post(self.url, data=form, headers=headers).status_code
            except httpx.HTTPError:
                status = 0
            with self.lock:
                self.posts += 1
                if 200 <= status < 300:
                    self.answered.add(form["MessageSid"])
                    return
                if status == 0:
                    self.connection_errors += 1
                else:
                    self.statuses[status] += 1
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(1.0, delay * 2)


def kill_during(server: Server, replay: Replay, kills: int, seed: int, timeout: float) -> list[float]:
    """SIGKILL the server `kills` times at random points of the replay, restarting it each time.

    Returns the kill times (time.time(), the clock of the fake provider's log).
    """
    rng = random.Random(seed)
    total = len(replay.forms)
    targets = sorted(rng.uniform(0.02, 0.95) * total for _ in range(kills))
    deadline = time.monotonic() + timeout
    times = []
    for target in targets:
        while len(replay.answered) < target:
            assert time.monotonic() < deadline, f"replay stalled: {len(replay.answered)} answered"
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.2))  # not always on an answer's heels
        server.kill()
        times.append(time.time())  # the process is gone: it sent nothing after this
        server.start(timeout=60)
    return times


@dataclass
class Figures:
    database: str
    replayed: int
    kills: int
    answered: int
    stored: int
    processed: int
    outbox: int
    sent: int
    failed: int
    duplicates: int
    lost: int
    server_errors: int
    connection_errors: int
    posts: int
    duration: float  # from the first post until everything was processed and sent
    replay_seconds: float  # until every message was answered 2xx
    orphans_outside_kills: int = 0  # sent twice (or cut) with no kill during the first send: a bug
    phantoms: int = 0  # sends that repeat no outbox row: a bug
    retried: int = 0  # rows whose send failed (a timeout) and was tried again
    cut: int = 0  # sends a kill cut short (the request's body incomplete)
    statuses: dict[int, int] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"{self.database}: replayed={self.replayed} kills={self.kills} answered_2xx={self.answered} "
            f"stored={self.stored} processed={self.processed} outbox={self.outbox} sent={self.sent} "
            f"failed={self.failed} duplicates={self.duplicates} lost={self.lost} "
            f"5xx={self.server_errors} connection_errors={self.connection_errors} posts={self.posts} "
            f"other_statuses={self.statuses} sent_twice_outside_kills={self.orphans_outside_kills} "
            f"phantoms={self.phantoms} retried={self.retried} cut_sends={self.cut} "
            f"replayed_in={self.replay_seconds:.1f}s duration={self.duration:.1f}s"
        )


def settled(db_url: str) -> bool:
    """Every inbound row processed and no outbound row waiting or in flight."""
    db = engine(db_url)
    try:
        with db.connect() as conn:
            unprocessed = conn.execute(
                select(func.count())
                .select_from(Message)
                .where(Message.direction == Direction.INBOUND, Message.processed_at.is_(None))
            ).scalar_one()
            pending = conn.execute(
                select(func.count())
                .select_from(Message)
                .where(
                    Message.direction == Direction.OUTBOUND,
                    Message.status.in_([MessageStatus.QUEUED, MessageStatus.SENDING]),
                )
            ).scalar_one()
        return unprocessed == 0 and pending == 0
    finally:
        db.dispose()


def figures(*, db_url: str, replay: Replay, fake: FakeProvider, kill_times: list[float]) -> Figures:
    """Set the database against what was answered, and the fake's log against the outbox and the kills."""
    db = engine(db_url)
    try:
        with db.connect() as conn:
            inbound = conn.execute(
                select(Message.provider_message_id, Message.processed_at).where(
                    Message.direction == Direction.INBOUND
                )
            ).all()
            outbound = conn.execute(
                select(
                    Message.id,
                    Message.status,
                    Message.provider_message_id,
                    Message.recipient,
                    Message.text,
                    Message.attempts,
                    Message.error,
                ).where(Message.direction == Direction.OUTBOUND)
            ).all()
    finally:
        db.dispose()
    stored = {sid for sid, _ in inbound}
    processed = {sid for sid, at in inbound if at is not None}
    with fake.lock:
        posted = [r for r in fake.requests if r.path.endswith("/Messages.json")]
    # A request the kill cut short (its body half sent) is no SMS: a provider refuses it.
    whole = [("To" in r.form and "Body" in r.form, r) for r in posted]
    requests = [r for ok, r in whole if ok]
    cut = [r for ok, r in whole if not ok]
    sids = {r.sid for r in requests}
    done = {MessageStatus.SENT, MessageStatus.DELIVERED}
    sent = [row for row in outbound if row.status in done and row.provider_message_id in sids]
    recorded = {row.provider_message_id for row in outbound}
    # A send the fake answered whose id no row holds: the row was sent again after a kill.
    orphans = [r for r in requests if r.sid not in recorded]
    outside = [
        r for r in orphans + cut if not any(-READ_LAG <= k - r.at <= IN_FLIGHT_WINDOW for k in kill_times)
    ]
    # ... and it repeats a row: the same text to the same phone (never an SMS no row asked for).
    queued = {(row.recipient, row.text) for row in outbound}
    phantoms = [r for r in orphans if (r.form["To"][0], r.form["Body"][0]) not in queued]
    not_stored = replay.answered - stored
    for r in outside:  # what a reader needs to tell a bug from a kill the window missed
        key = (r.form.get("To", [""])[0], r.form.get("Body", [""])[0])
        near = min((r.at - k for k in kill_times), key=abs, default=None)
        same = [
            (round(q.at - r.at, 3), q.answered, q.sid == r.sid)
            for q in requests
            if (q.form["To"][0], q.form["Body"][0]) == key
        ]
        rows = [
            (row.id, row.status, row.attempts, row.error)
            for row in outbound
            if (row.recipient, row.text) == key
        ]
        ORPHAN_DETAILS.append(
            f"orphan at={r.at:.3f} nearest_kill={near} answered={r.answered} sends={same} rows={rows}"
        )
    not_processed = replay.answered - processed
    not_sent = len(outbound) - len(sent) - sum(row.status == MessageStatus.FAILED for row in outbound)
    return Figures(
        database=re.sub(r"[+:].*", "", db_url),
        replayed=len(replay.forms),
        kills=len(kill_times),
        answered=len(replay.answered),
        stored=len(stored & replay.answered),
        processed=len(processed & replay.answered),
        outbox=len(outbound),
        sent=len(sent),
        failed=sum(row.status == MessageStatus.FAILED for row in outbound),
        duplicates=len(orphans),
        lost=len(not_stored) + len(not_processed) + not_sent,
        server_errors=replay.server_errors,
        connection_errors=replay.connection_errors,
        posts=replay.posts,
        duration=time.monotonic() - replay.started,
        replay_seconds=replay.finished - replay.started,
        orphans_outside_kills=len(outside),
        phantoms=len(phantoms),
        retried=sum(row.attempts > 1 for row in outbound),
        cut=len(cut),
        statuses=dict(replay.statuses),
    )
