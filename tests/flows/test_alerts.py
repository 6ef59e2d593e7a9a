"""When a night is degraded, and the automations built from [alerts] (created on a real server: test_server)."""

from datetime import timedelta

from flows.alerts import automations, degraded_reasons
from schemas.config import Alerts, Config


def _summary(**kw) -> dict:
    return {"n_inputs": 100, "n_errors": 5, "n_skipped": 0, "n_escalation_failed": 0,
            "escalation_rate": {"category": 0.1, "fields": 0.2}, **kw}


def test_a_night_is_degraded_past_each_limit_and_only_then():
    alerts = Alerts(max_error_rate=0.2, max_escalation_rate=0.5)
    assert degraded_reasons(_summary(), alerts) == []
    assert degraded_reasons(_summary(n_errors=21), alerts) == ["error rate 21% > 20%"]
    # Drift: the small model is suddenly unsure of one task.
    assert degraded_reasons(_summary(escalation_rate={"category": 0.8, "fields": 0.2}), alerts) == [
        "category escalation 80% > 50%"]
    assert degraded_reasons(_summary(n_escalation_failed=3), alerts) == [
        "3 documents could not reach the large tier"]
    assert degraded_reasons(_summary(n_inputs=0, n_errors=0, escalation_rate={}), alerts) == []


def test_the_automations_follow_the_configuration():
    config = Config(alerts=Alerts(completed_within_hours=5, silence_hours=30))
    by_name = {a.name: a for a in automations(config)}
    assert set(by_name) == {"sluicegate: run failed", "sluicegate: night degraded", "sluicegate: night not done",
                            "sluicegate: no night completed"}
    assert by_name["sluicegate: night not done"].trigger.within == timedelta(hours=5)
    assert by_name["sluicegate: no night completed"].trigger.within == timedelta(hours=30)
    assert "prefect.flow-run.Crashed" in by_name["sluicegate: run failed"].trigger.expect
    assert all(a.actions[0].type == "do-nothing" for a in by_name.values())  # no notify_block: they record
