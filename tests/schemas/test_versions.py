"""Model versions: folder + registry, applied to the configuration when it is loaded."""

from __future__ import annotations

import pytest

from schemas.config import LabelTask, LinearTier, TaskCalibration, Thresholds, load_config
from schemas.versions import ModelVersion, promote, read_registry, with_model_version, write_version
from tests.conftest import FIXTURES


def _config_file(tmp_path, registry_line: str) -> str:
    text = (FIXTURES / "sluicegate.toml").read_text(encoding="utf-8")
    text = text.replace('inbox = "inbox"', f'inbox = "{FIXTURES / "inbox"}"')
    text = text.replace('[models]\nregistry = "../models"\n', "")  # this test's registry instead
    path = tmp_path / "sluicegate.toml"
    path.write_text(text + f"\n[models]\n{registry_line}\n", encoding="utf-8")
    return str(path)


def test_the_promoted_version_is_applied_at_load(tmp_path):
    registry = tmp_path / "models"
    v1 = ModelVersion(
        id="ft-1", adapter="adapter.gguf",
        tasks=[LabelTask(name="category", labels=["ORDER", "REFUND"], question="Topic?"),
               LabelTask(name="intent", labels=["cancel_order", "get_refund"], question="Want?")],
        thresholds={"category": Thresholds(small=0.8, large=0.3)},
        calibration={"small:category": TaskCalibration(method="temperature", temperature=1.7)},
        linear={"intent": LinearTier(path="linear-intent.joblib", threshold=0.9)},
    )
    folder = write_version(registry, v1)
    (folder / "adapter.gguf").write_bytes(b"not used here")
    path = _config_file(tmp_path, 'registry = "models"')
    assert with_model_version(load_config(path)).models.active is None  # nothing promoted yet: the base model
    promote(registry, "ft-1", "test")
    config = with_model_version(load_config(path))
    assert config.models.active == "ft-1"
    assert config.small.adapter == str(folder / "adapter.gguf")
    assert not config.small.contextual_calibration  # a fine-tuned adapter needs no content-free division
    category = next(t for t in config.tasks if t.name == "category")
    assert category.labels == ["ORDER", "REFUND"] and category.sources == ["tickets"]  # sources from the file
    assert [t.name for t in config.tasks] == ["category", "intent", "sentiment"]  # intent learned, sentiment kept
    assert config.thresholds_for("category").small == 0.8
    assert config.calibration["small:category"].temperature == 1.7
    assert config.linear["intent"].path == str(folder / "linear-intent.joblib")
    base = load_config(path)  # the file alone
    assert base.models.active is None and base.small.adapter is None


def test_a_pinned_version_wins_and_a_missing_one_is_an_error(tmp_path):
    registry = tmp_path / "models"
    write_version(registry, ModelVersion(id="ft-a"))
    write_version(registry, ModelVersion(id="ft-b"))
    promote(registry, "ft-b", "newer")
    assert [h["id"] for h in read_registry(registry).history] == ["ft-b"]
    pinned = load_config(_config_file(tmp_path, 'registry = "models"\nversion = "ft-a"'))
    assert with_model_version(pinned).models.active == "ft-a"
    with pytest.raises(FileNotFoundError, match="ft-zzz"):
        with_model_version(load_config(_config_file(tmp_path, 'registry = "models"\nversion = "ft-zzz"')))
    with pytest.raises(FileNotFoundError):
        promote(registry, "ft-zzz", "no such version")
