"""When the loop passes next (pure): at the poll interval, every 0.25 s while a change is followed
up, every 0.1 s in the first second after a wake (the manager learns of a task a little after the
node that runs it hints the controller)."""

from __future__ import annotations

from controller.loop import next_wait

NEVER = -100.0


def test_quiet_the_poll_interval():
    assert next_wait(50.0, NEVER, NEVER, 10.0) == 10.0


def test_just_after_a_wake_every_tenth_of_a_second_then_every_quarter():
    woke = 50.0
    assert next_wait(woke + 0.05, woke, woke + 5.0, 10.0) == 0.1
    assert next_wait(woke + 0.95, woke, woke + 5.0, 10.0) == 0.1
    assert next_wait(woke + 1.05, woke, woke + 5.0, 10.0) == 0.25
    assert next_wait(woke + 5.05, woke, woke + 5.0, 10.0) == 10.0


def test_a_rolling_update_is_followed_without_a_wake():
    assert next_wait(50.0, NEVER, 50.25, 10.0) == 0.25


def test_a_poll_interval_shorter_than_the_follow_up_wins():
    assert next_wait(50.0, 49.9, 55.0, 0.05) == 0.05
