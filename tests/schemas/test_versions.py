"""Model versions: folder + registry, applied to the configuration when it is loaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.config import LabelTask, LinearTier, TaskCalibration, Thresholds, load_config
from schemas.versions import ModelVersion, apply_version, promote, read_registry, with_model_version, write_version
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
        linear={"intent": LinearTier(path="linear-intent.json", threshold=0.9)},
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
    assert config.linear["intent"].path == str(folder / "linear-intent.json")
    base = load_config(path)  # the file alone
    assert base.models.active is None and base.small.adapter is None



def test_a_version_only_task_keeps_the_version_sources(tmp_path):
    registry = tmp_path / "models"
    version = ModelVersion(
        id="ft-src",
        tasks=[LabelTask(name="category", labels=["ORDER", "REFUND"], question="Topic?", sources=["pdf", "tickets"]),
               LabelTask(name="intent", labels=["cancel_order", "get_refund"], question="Want?",
                         sources=["tickets"])],
    )
    folder = write_version(registry, version)
    base = load_config(_config_file(tmp_path, 'registry = "models"'))
    assert "intent" not in {t.name for t in base.tasks}
    config = apply_version(base, version, folder)
    tasks = {t.name: t for t in config.tasks}
    assert tasks["intent"].sources == ["tickets"]  # learned from tickets: not run on PDFs
    assert tasks["category"].sources == ["tickets"]  # configured: the configuration's sources win

def test_tasks_the_adapter_learned_without_options_are_asked_without_them_by_the_small_tier_only(tmp_path):
    from processors.tasks import label

    tasks = [LabelTask(name="category", labels=["ORDER", "REFUND"], question="Topic?"),
             LabelTask(name="intent", labels=["cancel_order", "get_refund"], question="Want?")]
    base = load_config(_config_file(tmp_path, 'registry = "models"'))
    old = ModelVersion(id="ft-old", tasks=tasks)  # trained with the option list (before tasks_without_options)
    assert apply_version(base, old, tmp_path).small.tasks_without_options == []
    # category is stored with the version (configured) but had no training example: it keeps its options
    new = ModelVersion(id="ft-new", tasks=tasks, tasks_without_options=["intent"])
    config = apply_version(base, new, tmp_path)
    assert config.small.tasks_without_options == ["intent"]
    by_name = {t.name: t for t in config.tasks}
    assert not label.asks_options(by_name["intent"], config.small)
    assert label.asks_options(by_name["category"], config.small)
    assert label.asks_options(by_name["sentiment"], config.small)  # configured, not in the version
    assert all(label.asks_options(t, config.large) for t in config.tasks)  # the large tier learned nothing
    assert ModelVersion.model_validate_json(new.model_dump_json()).tasks_without_options == ["intent"]


def test_the_large_tier_cannot_be_told_to_leave_out_options(tmp_path):
    from pydantic import ValidationError

    path = _config_file(tmp_path, 'registry = "models"')
    text = open(path).read().replace('[large]', '[large]\ntasks_without_options = ["category"]', 1)
    open(path, "w").write(text)
    with pytest.raises(ValidationError, match="the large tier is not fine-tuned"):
        load_config(path)


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


def _promoted(tmp_path, version: ModelVersion) -> tuple[str, Path]:
    registry = tmp_path / "models"
    folder = write_version(registry, version)
    promote(registry, version.id, "test")
    return _config_file(tmp_path, 'registry = "models"'), folder


@pytest.mark.parametrize("name", ["/etc/passwd", "../../x", "sub/../../x", "."])
@pytest.mark.parametrize("field", ["adapter", "linear.intent.path"])
def test_a_file_name_outside_the_version_folder_is_refused(tmp_path, field, name):
    version = ModelVersion(id="ft-bad", adapter=name if field == "adapter" else "adapter.gguf",
                           linear={"intent": LinearTier(path=name if field != "adapter" else "linear-intent.json",
                                                        threshold=0.9)})
    path, _ = _promoted(tmp_path, version)
    with pytest.raises(ValueError, match=rf"model version 'ft-bad': {re.escape(field)} .*inside its folder"):
        with_model_version(load_config(path))


def test_a_symlink_out_of_the_version_folder_is_refused(tmp_path):
    version = ModelVersion(id="ft-link", linear={"intent": LinearTier(path="linear-intent.json", threshold=0.9)})
    path, folder = _promoted(tmp_path, version)
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}", encoding="utf-8")
    (folder / "linear-intent.json").symlink_to(outside)
    with pytest.raises(ValueError, match="'ft-link': linear.intent.path 'linear-intent.json' resolves outside"):
        with_model_version(load_config(path))
    (folder / "linear-intent.json").unlink()
    (folder / "kept").mkdir()
    (folder / "kept" / "model.json").write_text("{}", encoding="utf-8")
    (folder / "linear-intent.json").symlink_to(folder / "kept" / "model.json")  # inside: fine
    assert with_model_version(load_config(path)).linear["intent"].path == str(folder / "linear-intent.json")


@pytest.mark.parametrize("version_id", ["../../x", "/etc", ".."])
def test_a_version_id_that_is_a_path_is_refused(tmp_path, version_id):
    (tmp_path / "models").mkdir()
    path = _config_file(tmp_path, f'registry = "models"\nversion = "{version_id}"')
    with pytest.raises(ValueError, match="is not a plain folder name"):
        with_model_version(load_config(path))


def test_a_registry_that_does_not_exist_is_an_error_not_the_base_model(tmp_path):
    """The bundled configuration copied to another folder: its relative registry points nowhere."""
    import shutil
    import subprocess
    import sys

    copied = tmp_path / "sluicegate.toml"
    shutil.copy(FIXTURES / "sluicegate.toml", copied)
    with pytest.raises(FileNotFoundError, match="registry .* does not exist"):
        with_model_version(load_config(copied))
    assert with_model_version(load_config(copied), registry_must_exist=False).models.active is None  # finetune
    done = subprocess.run([str(Path(sys.executable).parent / "sluicegate"), "run", "--date", "2026-11-20",
                           "--config", str(copied)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1 and "[models].registry" in done.stderr and "does not exist" in done.stderr


def test_configured_fields_and_tasks_the_version_does_not_cover_still_run_and_are_named(tmp_path):
    from schemas.config import FieldSpec

    version = ModelVersion(id="ft-f", tasks=[LabelTask(name="category", labels=["ORDER", "REFUND"], question="Q?")],
                           fields={"pdf": [FieldSpec(name="total_amount", type="amount", description="Total.")]})
    folder = write_version(tmp_path / "models", version)
    base = load_config(_config_file(tmp_path, 'registry = "models"'))
    base.fields["pdf"] = [FieldSpec(name="total_amount", type="amount", description="The grand total."),
                          FieldSpec(name="po_number", type="id", description="Purchase order number.")]
    config = apply_version(base, version, folder)
    assert [(f.name, f.description) for f in config.fields["pdf"]] == [("total_amount", "Total."),
                                                                        ("po_number", "Purchase order number.")]
    notes = "\n".join(config.models.notes)
    assert "field pdf.po_number: not in version ft-f, answered by the untrained model" in notes
    assert "field pdf.total_amount: the version's type and description are used" in notes
    assert "task category: the version's labels and question are used" in notes
    assert "task sentiment: not in version ft-f" in notes


def test_a_field_s_checks_are_the_configuration_s_not_the_version_s(tmp_path):
    """The shipped version learned total_amount without checks; the configuration's check "total" still applies
    (it judges answers after the model), and alone it is no difference worth a note."""
    from schemas.config import FieldSpec

    version = ModelVersion(id="ft-c", fields={"pdf": [FieldSpec(name="total_amount", type="amount",
                                                                description="Total."),
                                                      FieldSpec(name="subtotal", type="amount")]})
    folder = write_version(tmp_path / "models", version.model_copy(update={"fields": {"pdf": [
        f.model_copy(update={"checks": ["total"]}) if f.type == "amount" else f for f in version.fields["pdf"]]}}))
    assert '"checks"' not in (folder / "version.json").read_text()  # nothing the version learned
    base = load_config(_config_file(tmp_path, 'registry = "models"'))
    base.fields["pdf"] = [FieldSpec(name="total_amount", type="amount", description="Total.", checks=["total"])]
    config = apply_version(base, version, folder)
    assert [(f.name, f.checks) for f in config.fields["pdf"]] == [("total_amount", ["total"]), ("subtotal", [])]
    assert "field pdf.total_amount" not in "\n".join(config.models.notes)
    # the bundled configuration, with the shipped version applied, checks its totals
    shipped = with_model_version(load_config(FIXTURES / "sluicegate.toml"))
    assert shipped.models.active and not any("field pdf.total_amount" in n for n in shipped.models.notes)
    assert next(f for f in shipped.fields["pdf"] if f.name == "total_amount").checks == ["total"]
