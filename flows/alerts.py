"""Telling someone: an event at the end of every nightly run, and the automations that act on events.

Events (what a run emits, with its counts, so a person or an automation can react):
  sluicegate.nightly.completed  every completed run: inputs, results, errors, rates, escalation_failed
  sluicegate.nightly.degraded   also, when it completed past [alerts] limits (errors, escalation drift,
                                failed escalations); the reasons are in the payload
Automations (created by `sluicegate serve` and `sluicegate deploy`, replaced on every start):
  sluicegate: run failed         a nightly or backfill run Failed, Crashed or TimedOut
  sluicegate: night degraded     a sluicegate.nightly.degraded event
  sluicegate: night not done     a nightly run not Completed within completed_within_hours of starting
  sluicegate: no night completed no sluicegate.nightly.completed for silence_hours (a night that never ran)
Each sends to [alerts].notify_block when set; otherwise it only records its firing (UI: Automations).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from schemas.config import Alerts, Config

log = logging.getLogger("sluicegate.progress")
PREFIX = "sluicegate: "
FLOWS_WATCHED = ["nightly", "backfill"]


def degraded_reasons(summary: dict, alerts: Alerts) -> list[str]:
    """Why a completed night needs a look; [] when it does not. Pure: the thresholds against the counts."""
    reasons = []
    if summary["n_inputs"] and summary["n_errors"] / summary["n_inputs"] > alerts.max_error_rate:
        reasons.append(f"error rate {summary['n_errors'] / summary['n_inputs']:.0%} > "
                       f"{alerts.max_error_rate:.0%}")
    for item, rate in sorted(summary["escalation_rate"].items()):
        if rate > alerts.max_escalation_rate:
            reasons.append(f"{item} escalation {rate:.0%} > {alerts.max_escalation_rate:.0%}")
    if summary.get("n_escalation_failed"):
        reasons.append(f"{summary['n_escalation_failed']} documents could not reach the large tier")
    return reasons


def emit_run_events(summary: dict, config: Config) -> list[str]:
    """Emits the run's events (see the module's docstring); returns the degraded reasons. An event that
    cannot be sent never fails a run whose tables are written."""
    from prefect.events import emit_event

    reasons = degraded_reasons(summary, config.alerts)
    day = summary["run_date"]
    resource = {"prefect.resource.id": f"sluicegate.nightly.{day}", "prefect.resource.name": f"nightly-{day}",
                "sluicegate.run-date": day}
    payload = {key: summary[key] for key in ("run_id", "run_date", "n_inputs", "n_results", "n_errors",
                                             "n_skipped", "n_escalation_failed", "escalation_rate", "review_rate",
                                             "errors_by_reason", "invariant_ok")}
    try:
        emit_event("sluicegate.nightly.completed", resource=resource, payload=payload)
        if reasons:
            emit_event("sluicegate.nightly.degraded", resource=resource, payload={**payload, "reasons": reasons})
    except Exception as e:  # noqa: BLE001 - the night's rows are written; say so and go on
        log.warning("could not emit the run's events: %s", e)
    if reasons:
        log.warning("night %s completed, degraded: %s", day, "; ".join(reasons))
    return reasons


def automations(config: Config, notify_block_id=None) -> list:
    """The automations of the module's docstring (not yet created)."""
    from prefect.automations import Automation
    from prefect.events.actions import DoNothing, SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    alerts = config.alerts
    watched = {"prefect.resource.role": "flow", "prefect.resource.name": FLOWS_WATCHED}
    nightly = {"prefect.resource.role": "flow", "prefect.resource.name": "nightly"}

    def act(subject: str) -> list:
        if notify_block_id is None:
            return [DoNothing()]
        return [SendNotification(block_document_id=notify_block_id, subject=f"sluicegate: {subject}",
                                 body="{{ event.event }} {{ event.resource.get('prefect.resource.name') }}\n"
                                      "{{ event.payload }}")]

    return [
        Automation(name=PREFIX + "run failed", description="A nightly or backfill run failed, crashed or timed out.",
                   trigger=EventTrigger(expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed",
                                                "prefect.flow-run.TimedOut"}, match_related=watched,
                                        posture=Posture.Reactive, threshold=1),
                   actions=act("a run failed")),
        Automation(name=PREFIX + "night degraded",
                   description="A night completed past [alerts] limits (errors, escalation drift, failed "
                               "escalations); the reasons are in the event's payload.",
                   trigger=EventTrigger(expect={"sluicegate.nightly.degraded"}, posture=Posture.Reactive,
                                        threshold=1),
                   actions=act("a night completed degraded")),
        Automation(name=PREFIX + "night not done",
                   description=f"A nightly run not completed {alerts.completed_within_hours:g} h after it started.",
                   trigger=EventTrigger(after={"prefect.flow-run.Running"},
                                        expect={"prefect.flow-run.Completed"}, match_related=nightly,
                                        for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
                                        within=timedelta(hours=alerts.completed_within_hours)),
                   actions=act("a nightly run did not complete in time")),
        Automation(name=PREFIX + "no night completed",
                   description=f"No nightly run completed for {alerts.silence_hours:g} h.",
                   trigger=EventTrigger(expect={"sluicegate.nightly.completed"}, posture=Posture.Proactive,
                                        threshold=1, within=timedelta(hours=alerts.silence_hours)),
                   actions=act("no night completed")),
    ]


def ensure_automations(config: Config) -> list[str]:
    """Creates the automations on the current Prefect server, replacing earlier ones of the same name (so a
    changed [alerts] applies on the next `serve`/`deploy`). Returns their names."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        block_id = None
        if config.alerts.notify_block:
            slug, _, name = config.alerts.notify_block.partition("/")
            if not name:
                raise ValueError(f"[alerts].notify_block {config.alerts.notify_block!r}: expected "
                                 "'<block type slug>/<name>', e.g. 'slack-webhook/ops'")
            block_id = client.read_block_document_by_name(name=name, block_type_slug=slug).id
        names = []
        for automation in automations(config, block_id):
            for earlier in client.read_automations_by_name(automation.name):  # a name is not unique on the server
                client.delete_automation(earlier.id)
            automation.create()
            names.append(automation.name)
    return names
