"""One command fine-tunes on a user's CSV, and the next nightly run uses the new version; a second run on a
new label set keeps what the first version knew.

Real everything: PyTorch from the PyPI GGUF, a short LoRA training run, GGUF export loaded by
llama.cpp, evaluation with both tiers, the registry, then `sluicegate run` on a small inbox.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from processors.finetune.compare import decide_promotion
from schemas.versions import read_registry, read_version
from tests.conftest import FIXTURE_DATE, FIXTURES

SLUICEGATE = str(Path(sys.executable).parent / "sluicegate")
pytestmark = pytest.mark.slow

ROWS = [
    ("I want my money back for order 55501", "REFUND", "negative", "55501"),
    ("Where is my parcel? It is late again", "DELIVERY", "negative", ""),
    ("Thanks, the new invoice arrived fine", "INVOICE", "positive", ""),
    ("How do I change my password for my account", "ACCOUNT", "neutral", ""),
    ("Please cancel order 77123, I ordered twice", "ORDER", "neutral", "77123"),
    ("Great service, the refund came in two days", "REFUND", "positive", ""),
    ("My order 88812 never arrived, I am angry", "DELIVERY", "negative", "88812"),
    ("Can I get a copy of my invoice please", "INVOICE", "neutral", ""),
]
HELD = [
    ("Refund order 44410 now please", "REFUND", "negative", "44410"),
    ("Where can I download the invoice", "INVOICE", "neutral", ""),
]


def _csv(path: Path, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "category", "urgency", "sentiment", "field.order_id"])
        for text, cat, sent, order in rows:
            w.writerow([text, cat, "high" if sent == "negative" else "low", sent, order])
    return path


def _config(tmp_path: Path) -> Path:
    inbox = tmp_path / "inbox" / "tickets" / FIXTURE_DATE
    inbox.mkdir(parents=True)
    lines = (FIXTURES / "inbox" / "tickets" / FIXTURE_DATE / "support_export.jsonl").read_text().splitlines()
    (inbox / "tickets.jsonl").write_text("\n".join(lines[:3]) + "\n", encoding="utf-8")
    text = (FIXTURES / "sluicegate.toml").read_text(encoding="utf-8")
    text = text.replace('inbox = "inbox"', f'inbox = "{tmp_path / "inbox"}"').replace(
        'root = "../out"', f'root = "{tmp_path / "out"}"')
    text = text.replace('sources = ["tickets", "pdf"]\n', 'sources = ["tickets"]\n', 1)
    start = text.index("[models]") if "[models]" in text else None
    if start is not None:  # the shipped registry is replaced by this test's own
        end = text.find("\n[", start + 1)
        text = text[:start] + (text[end + 1:] if end > 0 else "")
    path = tmp_path / "sluicegate.toml"
    path.write_text(text + f'\n[models]\nregistry = "{tmp_path / "models"}"\n', encoding="utf-8")
    return path


def test_finetune_on_a_csv_then_the_nightly_run_uses_the_new_version(tmp_path, prefect_api):
    config = _config(tmp_path)
    env = dict(os.environ, PREFECT_API_URL=prefect_api)
    train, held = _csv(tmp_path / "train.csv", ROWS), _csv(tmp_path / "held.csv", HELD)
    done = subprocess.run([SLUICEGATE, "finetune", "--train", str(train), "--eval", str(held), "--epochs", "2",
                           "--force", "--config", str(config), "--json"], capture_output=True, text=True, timeout=1200,
                          check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout[done.stdout.index("{"):])
    version_id = result["version"]
    # compared with what runs today (the base model); promoted, forced if a few steps were not enough
    assert set(result["metrics"]) >= {"candidate_small", "promoted_small", "large", "candidate_cascade"}
    assert result["promoted"] and result["why"] == decide_promotion(result["metrics"]["promotion"])[1]
    registry = tmp_path / "models"
    assert read_registry(registry).promoted == version_id
    version = read_version(registry, version_id)
    assert version.adapter == "adapter.gguf" and (registry / "versions" / version_id / "adapter.gguf").exists()
    assert "urgency" in [t.name for t in version.tasks]  # a label set the configuration does not name
    # every label task of the CSV learned without the option list; the nightly below asks them without it
    assert version.tasks_without_options == ["category", "sentiment", "urgency"]
    assert version.training["loss_last"] < version.training["loss_first"]
    assert version.training["agreement_adapter_top1"] >= 0.75
    assert version.data_hash and version.metrics["candidate_small"]["score"] >= 0
    assert not version.thresholds  # two held-out items are too few to choose thresholds on: the config's stand
    assert (registry / "versions" / version_id / "evaluation" / "report.md").exists()

    # the next nightly run picks the promoted version up and names it in every row
    run = subprocess.run([SLUICEGATE, "run", "--date", FIXTURE_DATE, "--config", str(config), "--json"],
                         capture_output=True, text=True, timeout=900, check=False, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    results = pl.read_parquet(tmp_path / "out" / "results" / f"run_date={FIXTURE_DATE}" / "source=tickets")
    assert len(results) == 3
    assert results["model_version_id"].to_list() == [version_id] * 3
    assert all("+lora:adapter.gguf@" in v for v in results["small_model_version"].to_list())
    labels = pl.read_parquet(tmp_path / "out" / "labels" / f"run_date={FIXTURE_DATE}" / "source=tickets")
    urgency = labels.filter(pl.col("task") == "urgency")["label"]
    assert len(urgency) == 3 and urgency.is_in(["high", "low"]).all()  # the learned task, in its label set

    # A second run on a CSV with a new label set only (the 77-label case, small): the new version
    # still serves what the promoted one learned, rehearses its training examples and is judged on its held-out.
    team, team_held = tmp_path / "team.csv", tmp_path / "team_held.csv"
    # new texts: a copy of a row the first version trained on would be trained on anew, not rehearsed
    for path, rows in ((team, [(f"Team ticket: {text.lower()}", "money" if cat in ("REFUND", "INVOICE") else "ops")
                               for text, cat, _, _ in ROWS]),
                       (team_held, [("I need my refund today", "money"), ("My parcel is lost", "ops")])):
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "team"), *rows])
    done = subprocess.run([SLUICEGATE, "finetune", "--train", str(team), "--eval", str(team_held), "--epochs", "2",
                           "--force", "--config", str(config), "--json"], capture_output=True, text=True, timeout=1200,
                          check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads(done.stdout[done.stdout.index("{"):])
    assert second["stats"]["examples:rehearsal"] == 8 and second["stats"]["heldout:inherited"] == 2
    after = read_version(registry, second["version"])
    assert after.parent == version_id and after.training["started_from"] == version_id  # trained on from its adapter
    assert {t.name for t in after.tasks} == {"category", "sentiment", "urgency", "team"}  # urgency is not lost
    assert set(after.tasks_without_options) == {"category", "sentiment", "urgency", "team"}  # rehearsed: learned
    # promotion judged every task the promoted version serves, on its held-out examples too
    # both are judged on urgency's inherited held-out examples; the promoted version answers the new task as
    # evaluate asks any task it was not trained for (zero-shot, with the option list)
    comparison = second["metrics"]["promotion"]
    assert {f"{task}.{who}" for task in ("urgency", "category", "team") for who in ("candidate", "promoted")
            } <= set(comparison)
    better, why = decide_promotion(comparison, ["category", "sentiment", "urgency"])  # what the first one learned
    assert second["why"] == why
    assert read_registry(registry).history[-1]["why"] == (why if better else f"forced: {why}")
    heldout = (registry / "versions" / second["version"] / "heldout.jsonl").read_text().splitlines()
    assert len(heldout) == 4  # its own two and the two it inherited: the next version is judged on them too
    assert "team.tier0@all" in after.metrics["learning_curve"]
    report = (registry / "versions" / second["version"] / "evaluation" / "report.md").read_text()
    assert "## Learning curve" in report and "| team | " in report
    shutil.rmtree(tmp_path / "models" / ".work", ignore_errors=True)
