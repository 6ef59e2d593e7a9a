from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.config import Config, LabelTask, load_config


def test_shipped_config_loads_and_resolves_paths(config):
    assert [t.name for t in config.tasks] == ["category", "sentiment"]
    assert Path(config.inputs.inbox).is_absolute() and Path(config.inputs.inbox).exists()
    assert {f.name for f in config.fields["pdf"]} >= {"invoice_number", "date", "total_amount", "currency"}
    assert config.tickets.columns_for("web_form.csv").body == "message"
    assert config.tickets.columns_for("anything.jsonl").body == "body"


def test_empty_file_is_a_valid_config(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("")
    config = load_config(path)
    assert config.small.model == "gemma3-270m" and config.large.prompt_style == "chatml"
    assert config.thresholds_for("anything").small == 0.6


def test_typo_in_config_is_an_error(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("[small]\nmodle = 'x'\n")
    with pytest.raises(ValidationError, match="modle"):
        load_config(path)


def test_label_task_needs_two_distinct_labels():
    with pytest.raises(ValidationError):
        LabelTask(name="x", labels=["a", "a"])
    with pytest.raises(ValidationError):
        Config(tasks=[LabelTask(name="x", labels=["a", "b"]), LabelTask(name="x", labels=["c", "d"])])


def test_verbalizer_defaults_and_overrides():
    task = LabelTask(name="c", labels=["SHIPPING_ADDRESS", "X"], verbalizers={"X": "other"})
    assert task.verbalizer("SHIPPING_ADDRESS") == "shipping address"
    assert task.verbalizer("X") == "other"
