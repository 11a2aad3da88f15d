"""Structured logs (one JSON object a line) in which phone numbers are masked."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, date, datetime, time
from typing import Any

from app.phones import scrub

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# uvicorn gives its lines a copy of the message with terminal colour codes: the message says it all.
_STANDARD.add("color_message")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _clean(value: Any) -> Any:
    """An extra value as JSON holds it, every text in it scrubbed.

    Numbers and times are the code's own (counts, row ids, when), so they stay as they are;
    anything else is text by the time it is written, and text may hold a number someone typed.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict):
        return {scrub(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    return scrub(str(value))


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The record's traceback and stack, scrubbed (an error message may quote a row)."""
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    elif record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    return scrub("\n".join(parts)) if parts else None


class JsonFormatter(logging.Formatter):
    """Render a record and its `extra` fields as JSON, masking phone numbers in every text.

    `ts` and `level` come from the logging machinery, not from anyone who could type a number,
    so they stay as they are (a timestamp holds 14 digits).
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": scrub(record.name),
            "msg": scrub(record.getMessage()),
        }
        for key, value in _extras(record).items():
            out[scrub(key)] = _clean(value)
        exc = _exception(self, record)
        if exc:
            out["exc"] = exc
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, masked the same way."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{scrub(k)}={_clean(v)}" for k, v in _extras(record).items())
        line = f"{record.levelname:<7} {scrub(record.name)}: {scrub(record.getMessage())} {extras}".rstrip()
        exc = _exception(self, record)
        return f"{line}\n{exc}" if exc else line


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Send every logger through the masking formatter on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Twilio SDK logs every request with its parameters (phone numbers, texts) at INFO.
    logging.getLogger("twilio.http_client").setLevel(logging.WARNING)
    # uvicorn's loggers (its access log carries query strings) lose their own handlers and go
    # through the masking one above like every other logger.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs every request's full URL at INFO: an outbound webhook's may hold the receiver's
    # own token in its query. The deliverer logs its failures itself, by subscription id.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # APScheduler narrates adding and starting its jobs; "leading the check-in schedules" says it.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
