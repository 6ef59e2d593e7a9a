"""`sluicegate evaluate` as a user runs it (a subprocess), with the real models and the session's real Prefect."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.config import load_config
from schemas.versions import read_registry, read_version, with_model_version

SLUICEGATE = str(Path(sys.executable).parent / "sluicegate")

# A tiny set in the generic format: a text column and one column per label task.
ROWS = [
    ("t1", "Thank you so much, the replacement arrived early and works perfectly!", "positive"),
    ("t2", "My order is three weeks late and nobody answers my emails. Terrible.", "negative"),
    ("t3", "Please update the shipping address on my account to 12 Elm Street.", "neutral"),
    ("t4", "Great support, the agent solved my problem in five minutes.", "positive"),
    ("t5", "The app keeps crashing and I was charged twice. I want my money back.", "negative"),
    ("t6", "What are your opening hours on public holidays?", "neutral"),
    ("t7", "I love the new design, checkout is so much faster now.", "positive"),
    ("t8", "Worst experience ever, the package arrived broken and support hung up on me.", "negative"),
    ("t9", "Can I change the size of the shoes I ordered yesterday?", "neutral"),
    ("t10", "Still no refund after a month. This is unacceptable.", "negative"),
]

CONFIG = """
[models]
registry = "registry"

[[tasks]]
name = "sentiment"
question = "Is the writer's tone negative, neutral or positive?"
labels = ["negative", "neutral", "positive"]
sources = ["tickets"]
"""


def _run(*args: str, api: str | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """`sluicegate ...`; api: the session's Prefect server (else the embedded one, as without a server)."""
    # The embedded Prefect server's 20 s start-up limit is too short on a loaded CI machine.
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **os.environ}
    if api:
        env["PREFECT_API_URL"] = api
    return subprocess.run([SLUICEGATE, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env)


def test_targets_are_exclusive():
    done = _run("evaluate", "--data", "x.csv", "--target-escalation", "0.2", "--target-quality-gap", "1")
    assert done.returncode == 2 and "not allowed with" in done.stderr


@pytest.mark.slow
def test_calibrate_stores_calibration_in_a_version_the_next_run_uses(tmp_path, prefect_api):
    data = tmp_path / "tiny.csv"
    data.write_text("id,text,sentiment\n" + "".join(f'{i},"{t}",{s}\n' for i, t, s in ROWS), encoding="utf-8")
    config = tmp_path / "sluicegate.toml"
    config.write_text(CONFIG, encoding="utf-8")
    out = tmp_path / "eval"
    done = _run("evaluate", "--data", str(data), "--config", str(config), "--out", str(out), "--calibrate",
                "--target-escalation", "0.5", api=prefect_api)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sentiment" in done.stdout and "cascade" in done.stdout

    # No version existed: a new base-model version holds the calibration and is promoted.
    registry = read_registry(tmp_path / "registry")
    assert registry.promoted and registry.promoted.startswith("base-")
    version = read_version(tmp_path / "registry", registry.promoted)
    assert version.calibration["small:sentiment"].method == "temperature"
    assert version.thresholds["sentiment"].small > 0
    assert version.metrics["calibration"]["sentiment.escalation_rate"] <= 0.5

    # The next run's configuration applies it, and names the version its rows will carry.
    applied = with_model_version(load_config(config))
    assert applied.models.active == registry.promoted
    assert applied.calibration["small:sentiment"] == version.calibration["small:sentiment"]
    assert applied.thresholds["sentiment"] == version.thresholds["sentiment"]

    report = (out / "report.md").read_text()
    assert f"new base-model version `{registry.promoted}`" in report
    assert (out / "outcomes.parquet").exists() and (out / "escalation_sentiment.png").exists()
