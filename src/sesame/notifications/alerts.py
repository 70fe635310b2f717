"""Operational alerts: checked every minute by a job, raised once, resolved once.

- ``relay_lag`` — the age of the oldest event the notification router or the ledger has
  not taken yet (``SESAME_ALERT_RELAY_LAG_SECONDS``).
- ``delivery_failures`` and ``job_failures`` — the share of notification deliveries, and
  of jobs, that failed for good in the last 15 minutes (``SESAME_ALERT_FAILURE_RATIO``,
  with at least ``SESAME_ALERT_MIN_SAMPLES`` of them).

An alert that starts firing inserts a row whose ``firing_key`` is unique, in the same
transaction as an ``ops.alert`` event, so two processes checking at once raise it once;
the router sends it to platform administrators by e-mail and to the platform's webhooks.
When the value is back under the threshold the alert is resolved, with another event.

The same minute's job sends the device-offline alerts that are due (``outages``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from sesame.jobs import service as jobs
from sesame.jobs.repository import JobRepository
from sesame.kit.db import commit, write_intent
from sesame.kit.ids import new_id
from sesame.kit.logging import get_logger
from sesame.models import Alert
from sesame.notifications import outages
from sesame.notifications.repository import NotificationRepository
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime

log = get_logger("sesame.notifications.alerts")

ALERTS_JOB = "notifications.alerts"
WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class Reading:
    name: str
    value: float
    threshold: float
    message: str

    @property
    def firing(self) -> bool:
        return self.value > self.threshold


async def readings(runtime: Runtime, now: datetime) -> list[Reading]:
    settings = runtime.settings
    async with runtime.read_session_factory() as session:
        repository = NotificationRepository(session)
        lag = await repository.relay_lag(now)
        since = now - WINDOW
        deliveries = await repository.finished_since(since)
        job_counts = await JobRepository(session).finished_since(since)
    out = [
        Reading(
            "relay_lag",
            lag,
            settings.alert_relay_lag_seconds,
            f"events wait {lag:.0f} s to be relayed"
            f" (threshold {settings.alert_relay_lag_seconds:.0f} s)",
        )
    ]
    for name, (failed, total) in (("delivery_failures", deliveries), ("job_failures", job_counts)):
        ratio = failed / total if total >= settings.alert_min_samples else 0.0
        out.append(
            Reading(
                name,
                round(ratio, 4),
                settings.alert_failure_ratio,
                f"{failed} of {total} {name.split('_')[0]}s failed in 15 minutes",
            )
        )
    return out


async def check(runtime: Runtime) -> list[str]:
    """Raise or resolve each alert; returns the names whose state changed."""
    now = runtime.clock.now()
    changed = []
    for reading in await readings(runtime, now):
        try:
            with write_intent():
                async with runtime.session_factory() as session:
                    current = await NotificationRepository(session).firing(reading.name)
                    if reading.firing and current is None:
                        session.add(
                            Alert(
                                id=new_id(),
                                name=reading.name,
                                firing_key=reading.name,
                                value=reading.value,
                                threshold=reading.threshold,
                                message=reading.message,
                                raised_at=now,
                            )
                        )
                        state = "firing"
                    elif not reading.firing and current is not None:
                        current.firing_key, current.resolved_at = None, now
                        state = "resolved"
                    else:
                        continue
                    await outbox.append(
                        session,
                        [
                            outbox.message(
                                "ops.alert",
                                partner_id=None,
                                aggregate_id=None,
                                name=reading.name,
                                state=state,
                                value=reading.value,
                                threshold=reading.threshold,
                                message=f"[{state}] {reading.message}",
                            )
                        ],
                    )
                    await commit(session)
                    changed.append(reading.name)
                    log.warning("ops_alert", name=reading.name, state=state, value=reading.value)
        except IntegrityError:
            continue  # another process raised it first
    return changed


@jobs.handler(ALERTS_JOB, own_transactions=True)
async def check_alerts(run: jobs.JobRun) -> None:
    await check(run.runtime)
    await outages.alert_due(run.runtime)
