"""Model versions and the registry that names the promoted one.

A version is a folder `<registry>/versions/<id>/` holding `version.json` (this module's ModelVersion),
the LoRA adapter (`adapter.gguf`), and tier-0 linear models (`linear-<task>.json`) when kept. The
file names in `version.json` must stay inside the folder (version_file): a version cannot point a
run at any other file.
`<registry>/registry.json` names the promoted version and keeps the promotion history. The nightly
run applies the promoted (or pinned) version to its configuration and writes the version id into
every output row, so every answer can be traced to the adapter, label sets, calibration and
thresholds that made it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

from schemas.config import Config, FieldSpec, LabelTask, LinearTier, Strict, TaskCalibration, Thresholds

REGISTRY_FILE = "registry.json"
VERSION_FILE = "version.json"


class ModelVersion(Strict):
    id: str
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    parent: str | None = None  # the version that was promoted when this one was trained
    base_model: str = "gemma3-270m"
    adapter: str | None = None  # file name inside the folder
    prompt_style: Literal["base", "chatml"] = "base"
    # A fine-tuned adapter answers in the label set directly; content-free calibration is for base models.
    contextual_calibration: bool = False
    # The label tasks the adapter learned without the option list (the tasks it had training pairs for; a
    # version stores configured tasks it saw no example of too). Versions trained since 2026-12 learn their
    # label sets without it (shorter prompts: cheaper training and runs); older versions list every option.
    tasks_without_options: list[str] = Field(default_factory=list)
    tasks: list[LabelTask] = Field(default_factory=list)
    fields: dict[str, list[FieldSpec]] = Field(default_factory=dict)
    task_versions: dict[str, str] = Field(default_factory=dict)
    data_hash: str | None = None
    training: dict[str, float | int | str | list[str]] = Field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)  # split -> metric -> value
    calibration: dict[str, TaskCalibration] = Field(default_factory=dict)  # '<tier>:<task>' -> calibration
    thresholds: dict[str, Thresholds] = Field(default_factory=dict)
    linear: dict[str, LinearTier] = Field(default_factory=dict)  # task -> tier 0, path inside the folder
    demonstrations: str | None = None  # file name inside the folder: training examples for few-shot and rehearsal
    heldout: str | None = None  # file name inside the folder: the held-out examples it was judged on


class Registry(Strict):
    promoted: str | None = None
    history: list[dict[str, str]] = Field(default_factory=list)  # {"id", "at", "why"}


def read_registry(root: str | Path) -> Registry:
    path = Path(root) / REGISTRY_FILE
    if not path.exists():
        return Registry()
    return Registry.model_validate_json(path.read_text(encoding="utf-8"))


def version_dir(root: str | Path, version_id: str) -> Path:
    # the id comes from registry.json or the configuration: a plain folder name, never a path
    if version_id in ("", ".", "..") or Path(version_id).name != version_id:
        raise ValueError(f"model version id {version_id!r} is not a plain folder name")
    return Path(root) / "versions" / version_id


def version_file(folder: Path, version: ModelVersion, field: str, name: str) -> Path:
    """folder / name, refused unless it stays inside the version's folder: no absolute path, no `..`,
    no symlink that resolves outside. `field` names where the name came from, for the error."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(f"model version {version.id!r}: {field} {name!r} must be a file name inside its folder")
    path = folder / relative
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"model version {version.id!r}: {field} {name!r} resolves outside its folder "
                         f"(to {path.resolve()})")
    return path


def read_version(root: str | Path, version_id: str) -> ModelVersion:
    path = version_dir(root, version_id) / VERSION_FILE
    if not path.exists():
        raise FileNotFoundError(f"model version {version_id!r} not found under {root}")
    return ModelVersion.model_validate_json(path.read_text(encoding="utf-8"))


def write_version(root: str | Path, version: ModelVersion) -> Path:
    folder = version_dir(root, version.id)
    folder.mkdir(parents=True, exist_ok=True)
    # A field's checks are the configuration's (apply_version), not something the version learned.
    _atomic_write(folder / VERSION_FILE,
                  version.model_dump_json(indent=2, exclude={"fields": {"__all__": {"__all__": {"checks"}}}}))
    return folder


def promote(root: str | Path, version_id: str, why: str) -> Registry:
    """Names a version as the one nightly runs use; the previous ones stay in the history."""
    read_version(root, version_id)  # must exist
    registry = read_registry(root)
    registry.promoted = version_id
    registry.history.append({"id": version_id, "at": datetime.now(UTC).isoformat(timespec="seconds"), "why": why})
    _atomic_write(Path(root) / REGISTRY_FILE, registry.model_dump_json(indent=2))
    return registry


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def resolve(root: str | Path | None, pinned: str | None) -> tuple[ModelVersion, Path] | None:
    """The version a run should use: the pinned id, else the promoted one, else none (base model)."""
    if not root:
        return None
    version_id = pinned or read_registry(root).promoted
    if not version_id:
        return None
    return read_version(root, version_id), version_dir(root, version_id)


def with_model_version(config: Config, registry_must_exist: bool = True) -> Config:
    """The configuration a run uses: with the registry's pinned (`[models] version`) or promoted model
    version applied (a copy), or unchanged when the registry has none (the base model).

    A configured registry folder that does not exist is an error, never a silent fall back to the base
    model (a configuration copied elsewhere resolves its relative paths from its new folder).
    registry_must_exist=False: fine-tuning, which creates it."""
    registry = config.models.registry
    if registry and registry_must_exist and not Path(registry).is_dir():
        raise FileNotFoundError(
            f"[models].registry {registry} does not exist (relative paths resolve against the configuration "
            "file's folder): fix the path, or remove [models].registry to run the base model on purpose")
    found = resolve(registry, config.models.version) if registry and Path(registry).is_dir() else None
    return apply_version(config, *found) if found else config


def apply_version(config: Config, version: ModelVersion, folder: Path) -> Config:
    """The configuration a run uses with this version: a copy, the original is left alone.

    The adapter was trained on the version's prompts, so the version's label sets, questions and
    field specs win for what it covers (the configuration keeps its `sources` per task and any
    task or field source the version does not cover). Its calibration, thresholds and tier 0 win too.
    """
    config = config.model_copy(deep=True)
    config.small.model = version.base_model
    config.small.adapter = str(version_file(folder, version, "adapter", version.adapter)) if version.adapter else None
    config.small.prompt_style = version.prompt_style
    config.small.contextual_calibration = version.contextual_calibration
    config.small.tasks_without_options = [t.name for t in version.tasks if t.name in version.tasks_without_options]
    notes = []
    configured = {t.name: t for t in config.tasks}
    tasks = []
    for trained in version.tasks:
        task = trained.model_copy(deep=True)
        if trained.name in configured:
            task.sources = configured[trained.name].sources
            mine = configured[trained.name]
            if (mine.labels, mine.question) != (trained.labels, trained.question):
                notes.append(f"task {trained.name}: the version's labels and question are used, not the "
                             "configuration's (fine-tune to change them)")
        tasks.append(task)
    trained_names = {t.name for t in version.tasks}
    untrained = [t for t in config.tasks if t.name not in trained_names]
    notes += [f"task {t.name}: not in version {version.id}, answered by the untrained model" for t in untrained]
    config.tasks = tasks + untrained
    for source, specs in version.fields.items():
        # The version's spec for each field it learned; the configuration's other fields still run, untrained.
        # Its checks are the configuration's: they judge answers after the model, which learned none of them.
        learned = {f.name: f for f in specs}
        configured = {f.name: f for f in config.fields.get(source, [])}
        merged = [f.model_copy(update={"checks": list(configured[f.name].checks)} if f.name in configured else {})
                  for f in specs]
        for spec in config.fields.get(source, []):
            if spec.name not in learned:
                merged.append(spec.model_copy())
                notes.append(f"field {source}.{spec.name}: not in version {version.id}, answered by the "
                             "untrained model")
            elif (spec.type, spec.description) != (learned[spec.name].type, learned[spec.name].description):
                notes.append(f"field {source}.{spec.name}: the version's type and description are used, not "
                             "the configuration's (fine-tune to change them)")
        config.fields[source] = merged
    config.thresholds.update({k: v.model_copy() for k, v in version.thresholds.items()})
    config.calibration.update({k: v.model_copy() for k, v in version.calibration.items()})
    config.linear = {task: LinearTier(path=str(version_file(folder, version, f"linear.{task}.path", tier.path)),
                                      threshold=tier.threshold)
                     for task, tier in version.linear.items()}
    config.demonstrations = (str(version_file(folder, version, "demonstrations", version.demonstrations))
                             if version.demonstrations else None)
    config.models.active = version.id
    config.models.notes = notes
    return config
