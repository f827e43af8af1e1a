"""When ``finpulse retrain --every`` starts the next run: pure logic over ``ScheduleFacts``.

A run is **due on schedule** one period after the newest run that did not fail (from any
process: a run in progress counts, so two schedulers do not run back to back) or after
this process's own last attempt, whichever is later. A failed run does not postpone other
processes' schedules, but its own process waits a period before trying again.

A run starts **early** when a model-health alert asks for one: an alert of a
``model_health`` rule that is firing, was fired or extended (``updated_at``) after the
newest run started (an older one was there when that run began), and has not triggered a
run before. Early runs are at most one per ``cooldown`` (counted from the start of the
last early run, whatever its outcome). The run records ``model_health:<alert id>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from finpulse.storage.retraining import HEALTH_TRIGGER, ScheduleFacts


@dataclass(frozen=True)
class Next:
    """The schedule's answer: start now with ``trigger``, or not before ``due_at``.

    Attributes:
        trigger: ``schedule`` or ``model_health:<alert id>`` to start a run now; None to wait.
        due_at: when the next scheduled run is due (an alert may bring it forward).
    """

    trigger: str | None
    due_at: datetime


def next_run(
    facts: ScheduleFacts,
    *,
    now: datetime,
    every: timedelta,
    cooldown: timedelta | None,
    last_attempt: datetime | None = None,
) -> Next:
    """Decide whether a run starts now; see the module docstring.

    Args:
        facts: the database's view (``finpulse.storage.retraining.schedule_facts``).
        now: the current time.
        every: the schedule's period.
        cooldown: the least time between two early runs; None: alerts never start a run.
        last_attempt: when this process last started a run (whatever its outcome).

    Returns:
        The trigger to start with now, if any, and when the scheduled run is due.
    """
    since = max((t for t in (facts.last_started, last_attempt) if t is not None), default=None)
    due_at = now if since is None else since + every
    if now >= due_at:
        return Next("schedule", due_at)
    if cooldown is None or (facts.last_health_started is not None
                            and now < facts.last_health_started + cooldown):
        return Next(None, due_at)
    for alert in facts.alerts:
        if alert.id in facts.used_alerts:
            continue
        if facts.last_started is not None and alert.updated_at <= facts.last_started:
            continue
        return Next(f"{HEALTH_TRIGGER}:{alert.id}", due_at)
    return Next(None, due_at)
