"""When the weekly retrain runs: the Dagster schedule's calendar, and its next time for the
retention console (which reads no Dagster state, so it says "when the schedule is on")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: Monday (datetime's weekday 0), 06:00 UTC.
WEEKDAY, HOUR = 0, 6
#: The same time as cron: its day of the week counts from Sunday = 0.
CRON = f"0 {HOUR} * * {(WEEKDAY + 1) % 7}"


def next_weekly(after: datetime) -> datetime:
    """The first weekly retrain strictly after `after` (an aware time, any zone)."""
    now = after.astimezone(UTC)
    day = now.replace(hour=HOUR, minute=0, second=0, microsecond=0)
    day += timedelta(days=(WEEKDAY - now.weekday()) % 7)
    return day if day > now else day + timedelta(days=7)
