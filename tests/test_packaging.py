"""What a fresh machine installs: the lock holds no PyTorch and no path outside the project, and the nightly
job, evaluate and serve never import the training stack (PyTorch, transformers, PEFT: the 'finetune' extra)."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from processors.finetune import TRAINING_PACKAGES

ROOT = Path(__file__).resolve().parent.parent
SLUICEGATE = str(Path(sys.executable).parent / "sluicegate")


def test_the_lock_holds_no_torch_and_only_registry_downloads():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    names = {package["name"] for package in lock["package"]}
    assert "torch" not in names and not any(name.startswith("nvidia-") for name in names)
    for package in lock["package"]:
        source = package["source"]
        if package["name"] == "sluicegate":
            assert source == {"editable": "."}
            continue
        # A path or a find-links folder exists only on the machine that wrote the lock.
        assert set(source) == {"registry"} and source["registry"].startswith("https://"), package["name"]
        for artifact in [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]:
            assert artifact.get("url", "").startswith("https://"), (package["name"], artifact)
    assert "find-links" not in (ROOT / "pyproject.toml").read_text()


def test_uv_export_lists_no_torch_and_no_local_path():
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is how README installs: it must be on PATH"
    for extras in ([], ["--extra", "finetune"]):
        exported = subprocess.run([uv, "export", "--frozen", "--no-dev", *extras], cwd=ROOT, capture_output=True,
                                  text=True, timeout=120, check=True).stdout
        requirements = [line for line in exported.splitlines() if line and not line.lstrip().startswith("#")]
        assert not [line for line in requirements if line.lower().startswith(("torch", "nvidia"))]
        assert not [line for line in requirements if "file://" in line or line.startswith(("/", "./", "-e /"))]
        assert any(line.startswith("peft==") for line in requirements) == bool(extras)


def without_training_stack() -> dict[str, str]:
    """The environment of a process that cannot import the training packages, as without the extra."""
    folder = str(Path(__file__).parent / "without_training_stack")  # its sitecustomize.py blocks them
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")])),
            "SLUICEGATE_NOT_INSTALLED": ",".join(TRAINING_PACKAGES)}


def _sluicegate(*args: str, api: str | None = None) -> subprocess.CompletedProcess:
    """`sluicegate ...` without the training stack; api: a Prefect server (else the embedded one)."""
    env = without_training_stack() | ({"PREFECT_API_URL": api} if api else {})
    return subprocess.run([SLUICEGATE, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


def test_the_blocked_packages_really_cannot_be_imported():
    done = subprocess.run([sys.executable, "-c", "import torch"], env=without_training_stack(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1 and "No module named 'torch'" in done.stderr


def test_evaluate_and_serve_run_without_the_training_stack(tmp_path, prefect_api):
    """A re-scoring evaluate (calibration, report, plots) and serve's modules; the nightly job itself runs this
    way in tests/flows/test_cli.py (the backfill through the console script, both tiers)."""
    from tests.conftest import FIXTURES

    outcomes = next((ROOT / "models" / "versions").glob("*/evaluation-bitext-validation/outcomes.parquet"))
    rescored = _sluicegate("evaluate", "--outcomes", str(outcomes), "--out", str(tmp_path / "eval"),
                           "--config", str(FIXTURES / "sluicegate.toml"), api=prefect_api)
    assert rescored.returncode == 0, rescored.stdout[-2000:] + rescored.stderr[-3000:]
    assert (tmp_path / "eval" / "summary.json").exists()
    served = subprocess.run([sys.executable, "-c", "import flows.deployments, flows.nightly, flows.backfill"],
                            env=without_training_stack(), cwd=ROOT, capture_output=True, text=True, timeout=120,
                            check=False)
    assert served.returncode == 0, served.stderr[-3000:]


def test_finetune_without_the_training_stack_says_what_to_install(tmp_path):
    done = _sluicegate("finetune", "--train", str(tmp_path / "labels.csv"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--extra finetune" in done.stderr and "download.pytorch.org/whl/cpu" in done.stderr, done.stderr
