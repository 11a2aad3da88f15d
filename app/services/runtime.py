"""The parts of a running Kengele process, wired together and started or stopped as one."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import Engine

import gateways
from app.config import Settings
from app.db import Checkpointer, make_engine, make_sessionmaker, sqlite_path
from app.services.checkins import CheckIns, Scheduler
from app.services.escalation import Escalation, Escalator
from app.services.intake import IntakeWriter
from app.services.outbox import Dispatcher, RetryPolicy
from app.services.pipeline import PipelineConfig
from app.services.processing import Processor
from keywords.parser import lexicon

log = logging.getLogger("kengele.runtime")
# Alerts waiting to be processed above which the dispatcher sends only what officers must read now.
URGENT_BACKLOG = 20


class Runtime:
    """Engine, intake writer, processor and dispatcher of one process."""

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        self.settings = settings
        path = sqlite_path(settings.database_url) if engine is None else None
        self.checkpointer = Checkpointer(path) if path else None
        self.engine = engine or make_engine(
            settings.database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            background_checkpoints=self.checkpointer is not None,
        )
        self.factory = make_sessionmaker(self.engine)
        self.gateways = gateways.build(settings)
        self.pipeline = PipelineConfig(
            lexicon=lexicon(settings.default_language),
            reply_unregistered=settings.reply_unregistered,
            dedup_radius_km=settings.dedup_radius_km,
            dedup_window=timedelta(seconds=settings.dedup_window),
            escalation=Escalation(
                lexicon=lexicon(settings.default_language),
                ack_timeout=settings.ack_timeout,
                timezone=settings.timezone,
                reporter_phones=settings.forward_reporter_phone,
            ),
        )
        lease = timedelta(seconds=settings.processing_lease)
        self.writer = IntakeWriter(engine=self.engine, region=settings.default_region, lease=lease)
        self.dispatcher = Dispatcher(
            factory=self.factory,
            gateways=self.gateways,
            policy=RetryPolicy(
                settings.send_max_attempts, settings.send_backoff_base, settings.send_backoff_max
            ),
            concurrency=settings.dispatch_concurrency,
            lease=settings.send_lease,
            poll=settings.dispatch_poll,
            intake_busy=self.writer.busy,
            send_timeout=settings.send_timeout,
        )
        self.processor = Processor(
            factory=self.factory,
            config=self.pipeline,
            claim_token=self.writer.claim_token,
            on_outbox=self.dispatcher.notify,
            sole_process=settings.is_sqlite,
            lease=lease,
            intake_busy=self.writer.busy,
        )
        self.writer.on_stored = self.processor.submit
        self.dispatcher.urgent_only = lambda: self.processor.backlog() > URGENT_BACKLOG
        assert self.pipeline.escalation is not None
        self.escalator = Escalator(
            factory=self.factory,
            escalation=self.pipeline.escalation,
            every=settings.escalation_poll,
            on_outbox=self.dispatcher.notify,
        )
        self.checkins = CheckIns(
            factory=self.factory,
            lexicon=self.pipeline.lexicon,
            timezone=settings.timezone,
            schedule=settings.checkin_schedule,
            overrides=settings.checkin_schedules,
            silent_after=settings.silent_after,
            on_outbox=self.dispatcher.notify,
        )
        self.scheduler = Scheduler(engine=self.engine, checkins=self.checkins)
        self._started: list[str] = []

    def start(
        self, *, intake: bool = True, processor: bool = True, dispatcher: bool = True, scheduler: bool = True
    ) -> None:
        if self.checkpointer is not None:
            self.checkpointer.start()
        if intake:
            self.writer.claim = processor
            self.writer.start()
            self._started.append("intake")
        if processor:
            self.processor.start()
            self._started.append("processor")
        if dispatcher:
            self.dispatcher.start()
            self._started.append("dispatcher")
        if scheduler:
            self.escalator.start()
            self.scheduler.start()
            self._started.append("scheduler")
        log.info("runtime started", extra={"parts": self._started, "gateways": self.settings.gateway})

    def dead_parts(self) -> list[str]:
        """Background parts this process started that are no longer running."""
        alive = {
            "intake": self.writer.alive,
            "processor": self.processor.alive,
            "dispatcher": self.dispatcher.alive,
            "scheduler": self.escalator.alive and self.scheduler.alive,
        }
        return [part for part in self._started if not alive[part]]

    def stop(self) -> None:
        if "intake" in self._started:
            self.writer.stop()
        if "processor" in self._started:
            self.processor.stop()
        if "dispatcher" in self._started:
            self.dispatcher.stop()
        if "scheduler" in self._started:
            self.escalator.stop()
            self.scheduler.stop()
        self._started.clear()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()
