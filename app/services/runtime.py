"""The parts of a running Kengele process, wired together and started or stopped as one."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import Engine

import gateways
from app.config import Settings
from app.crypto import keyring_for
from app.db import Checkpointer, make_engine, make_sessionmaker, sqlite_path
from app.services.checkins import CheckIns, Scheduler
from app.services.escalation import Escalation, Escalator
from app.services.intake import IntakeWriter
from app.services.outbox import Dispatcher, RetryPolicy
from app.services.pacing import Pacer
from app.services.pipeline import PipelineConfig
from app.services.processing import Processor
from app.services.retention import RetentionJob
from app.services.webhooks import Deliverer
from app.services.worker import Signals, Worker
from keywords.parser import lexicon

log = logging.getLogger("kengele.runtime")


class Runtime:
    """The engine and the workers of one process, and the signals between them."""

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        self.settings = settings
        path = sqlite_path(settings.database_url) if engine is None else None
        self.checkpointer = Checkpointer(path) if path else None
        self.keyring = keyring_for(settings)
        self.engine = engine or make_engine(
            settings.database_url,
            keyring=self.keyring,
            sqlite_synchronous=settings.sqlite_synchronous,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            background_checkpoints=self.checkpointer is not None,
        )
        self.factory = make_sessionmaker(self.engine)
        self.gateways = gateways.build(settings)
        limits = settings.limits
        self.pipeline = PipelineConfig(
            lexicon=lexicon(settings.default_language, extra=settings.grammars_dir),
            reply_unregistered=settings.reply_unregistered,
            dedup_radius_km=settings.dedup_radius_km,
            dedup_window=timedelta(seconds=settings.dedup_window),
            escalation=Escalation(
                lexicon=lexicon(settings.default_language, extra=settings.grammars_dir),
                ack_timeout=settings.ack_timeout,
                timezone=settings.timezone,
                reporter_phones=settings.forward_reporter_phone,
                flood=limits.flood,
            ),
            limits=limits,
        )
        lease = timedelta(seconds=settings.processing_lease)
        # The workers, and all that passes between them (through `signals`, nothing else):
        #   stored ids     intake writer -> processor
        #   intake busy    intake writer -> processor, dispatcher (both give way to a webhook burst)
        #   backlog        processor -> dispatcher (only urgent sends while alerts wait)
        #   outbox ready   processor, escalator, check-ins, receipts, API -> dispatcher (look now)
        self.signals = Signals()
        self.writer = IntakeWriter(
            engine=self.engine, region=settings.default_region, lease=lease, signals=self.signals
        )
        self.processor = Processor(
            factory=self.factory,
            config=self.pipeline,
            claim_token=self.writer.claim_token,
            signals=self.signals,
            sole_process=settings.is_sqlite,
            lease=lease,
            # PostgreSQL's intake commits do not wait for the processor's (SQLite's do): there,
            # longer transactions pay fewer round trips a message (claims renewed, messages and
            # senders loaded, locks, commit), and a replica waits for another at most that long.
            budget=0.003 if settings.is_sqlite else 0.05,
            calm_budget=0.015 if settings.is_sqlite else 0.1,
            sizes=(4, 16) if settings.is_sqlite else (32, 32),
        )
        self.dispatcher = Dispatcher(
            factory=self.factory,
            gateways=self.gateways,
            policy=RetryPolicy(
                settings.send_max_attempts, settings.send_backoff_base, settings.send_backoff_max
            ),
            signals=self.signals,
            concurrency=settings.dispatch_concurrency,
            lease=settings.send_lease,
            poll=settings.dispatch_poll,
            send_timeout=settings.send_timeout,
            pacer=Pacer(rates=settings.send_rates, budgets=settings.sms_budgets, timezone=settings.timezone),
        )
        # Outbound webhooks: a sender, like the dispatcher, so it runs where the dispatcher does.
        self.webhooks = Deliverer(
            factory=self.factory,
            signals=self.signals,
            timeout=settings.webhook_timeout,
            backoff_base=settings.webhook_backoff_base,
            backoff_max=settings.webhook_backoff_max,
            lease=settings.webhook_lease,
            poll=settings.webhook_poll,
            concurrency=settings.webhook_concurrency,
        )
        assert self.pipeline.escalation is not None
        self.escalator = Escalator(
            factory=self.factory,
            escalation=self.pipeline.escalation,
            signals=self.signals,
            every=settings.escalation_poll,
        )
        self.checkins = CheckIns(
            factory=self.factory,
            lexicon=self.pipeline.lexicon,
            timezone=settings.timezone,
            schedule=settings.checkin_schedule,
            overrides=settings.checkin_schedules,
            silent_after=settings.silent_after,
            signals=self.signals,
        )
        self.scheduler = Scheduler(engine=self.engine, checkins=self.checkins, signals=self.signals)
        # In every scheduling process: hourly it looks in the audit log for a run a day old. A run
        # is idempotent, and with PostgreSQL one replica at a time runs it.
        self.retention = RetentionJob(
            factory=self.factory, engine=self.engine, days=settings.retention_days, signals=self.signals
        )
        self._started: list[Worker] = []

    def start(
        self, *, intake: bool = True, processor: bool = True, dispatcher: bool = True, scheduler: bool = True
    ) -> None:
        """Start the checkpointer and the workers wanted (`scheduler`: escalations, check-ins, retention)."""
        if self.checkpointer is not None:
            self.checkpointer.start()
        if intake:
            # Without a processor here, fresh rows are left unclaimed for another process's sweep.
            self.writer.start(claim=processor)
            self._started.append(self.writer)
        wanted = [
            (processor, self.processor),
            (dispatcher, self.dispatcher),
            (dispatcher, self.webhooks),
            (scheduler, self.escalator),
            (scheduler, self.scheduler),
            (scheduler, self.retention),
        ]
        for want, worker in wanted:
            if want:
                worker.start()
                self._started.append(worker)
        log.info(
            "runtime started",
            extra={"parts": [w.name for w in self._started], "gateways": self.settings.gateway},
        )

    def dead_parts(self) -> list[str]:
        """Name the workers this process started that are no longer running."""
        return [worker.name for worker in self._started if not worker.alive]

    def stop(self) -> None:
        """Stop the workers in the order they started (intake first: nothing new comes in)."""
        for worker in self._started:
            worker.stop()
        self._started.clear()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
