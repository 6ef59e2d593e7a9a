"""The run date of a run without an explicit date: the night before its scheduled start, in the schedule's
time zone (a real scheduled run through a real server: tests/flows/test_server.py)."""

from datetime import UTC, date, datetime

from flows.nightly import night_before


def test_a_late_start_still_processes_the_scheduled_night():
    scheduled = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    assert night_before(scheduled, "UTC") == date(2026, 11, 20)
    # The same run reads its date in the schedule's zone: 23:30 UTC is already the next day in Berlin.
    assert night_before(datetime(2026, 11, 20, 23, 30, tzinfo=UTC), "Europe/Berlin") == date(2026, 11, 20)
    assert night_before(datetime(2026, 11, 20, 23, 30, tzinfo=UTC), "UTC") == date(2026, 11, 19)
