"""Shared fixtures. Real components only: the real small model, real files, a real embedded Prefect."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.settings import apply_defaults

apply_defaults()

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SHARED_DATA = ROOT.parent / "shared" / "data"
FIXTURE_DATE = "2026-11-20"


@pytest.fixture(scope="session")
def config():
    from schemas.config import load_config

    # The base model: unit tests of the mechanics do not depend on which model version is shipped.
    # The end-to-end runs load the file as a user does, with the promoted version (models/).
    return load_config(FIXTURES / "sluicegate.toml", apply_version=False)


@pytest.fixture(scope="session")
def small_runtime(config):
    """The real Gemma 3 270M in llama.cpp, loaded once for the session (about 2 s)."""
    from processors.models import load_runtime

    runtime = load_runtime(config.small)
    yield runtime
    runtime.close()


@pytest.fixture(scope="session")
def linear_category(tmp_path_factory):
    """A real tier 0 for bitext categories, fitted on 800 training tickets (a few seconds): (labeler, path)."""
    from processors.datasets import load_examples, sample
    from processors.linear import LinearLabeler

    train = sample(load_examples(SHARED_DATA / "tickets/bitext/train.csv"), 800, stratify="category")
    labeler = LinearLabeler.fit([e.text for e in train], [e.labels["category"] for e in train])
    path = tmp_path_factory.mktemp("tier0") / "linear-category.joblib"
    labeler.save(path)
    return LinearLabeler.load(path), path
