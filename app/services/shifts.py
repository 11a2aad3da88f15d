"""Weekly on-duty shift tables: "mon-fri 08:00-18:00; sat 08:00-12:00; sun 22:00-06:00".

An officer with no table is always on duty. Times are local (KENGELE_TIMEZONE); a window whose end
is not after its start runs over midnight into the next day. Days are written in English or
French, alone, as ranges (`mon-fri`, wrapping `fri-mon`) or lists (`sat,sun`); `daily` is every day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

DAYS = {
    **{d: i for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))},
    **{
        d: i
        for i, d in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
    },
    **{d: i for i, d in enumerate(("lun", "mar", "mer", "jeu", "ven", "sam", "dim"))},
}
WEEK_MINUTES = 7 * 24 * 60
_WINDOW = re.compile(r"^(?P<days>[a-z,\-]+)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$")


@dataclass(frozen=True, slots=True)
class Window:
    """Minutes of the week [start, end), Monday 00:00 = 0; `end` may pass the week's end."""

    start: int
    end: int


def _minutes(clock: str, *, end: bool) -> int:
    hours, minutes = (int(part) for part in clock.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        raise ValueError(f"shifts: {clock!r} is not a time of day")
    return hours * 60 + minutes


def _days(spec: str) -> list[int]:
    if spec in ("daily", "all", "tous"):
        return list(range(7))
    days: list[int] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"shifts: {part!r} is not a day or a range of days (mon-fri, sat,sun)")
        a, b = DAYS[first], DAYS[last or first]
        days += [(a + i) % 7 for i in range((b - a) % 7 + 1)]
    return days


@lru_cache(maxsize=4096)
def parse_shifts(table: str | None) -> tuple[Window, ...]:
    """The windows of a shift table; empty = always on duty. ValueError names what is wrong."""
    if table is None or not table.strip():
        return ()
    windows: list[Window] = []
    for chunk in re.split(r"[;\n]", table.lower()):
        chunk = " ".join(chunk.split())
        if not chunk:
            continue
        match = _WINDOW.match(chunk)
        if match is None:
            raise ValueError(f"shifts: {chunk!r} is not 'days HH:MM-HH:MM' (e.g. 'mon-fri 08:00-18:00')")
        start, end = _minutes(match["start"], end=False), _minutes(match["end"], end=True)
        length = (end - start) % (24 * 60) or 24 * 60  # 08:00-08:00 is the whole day
        for day in _days(match["days"]):
            first = day * 24 * 60 + start
            windows.append(Window(first, first + length))
    return tuple(windows)


def normalize_shifts(table: str | None) -> str | None:
    """Check a table and store it tidy (one space, `; ` between windows); None when empty."""
    if table is None or not table.strip():
        return None
    parse_shifts(table)
    return "; ".join(" ".join(c.split()) for c in re.split(r"[;\n]", table.lower()) if c.strip())


def on_duty(table: str | None, local: datetime) -> bool:
    """Whether a shift table covers a local time."""
    windows = parse_shifts(table)
    if not windows:
        return True
    minute = local.weekday() * 24 * 60 + local.hour * 60 + local.minute
    return any(w.start <= m < w.end for w in windows for m in (minute, minute + WEEK_MINUTES))
