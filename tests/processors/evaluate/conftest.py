"""One real evaluation (the real small model, and the large tier from the configuration) on a small labelled
mix, shared by this package's tests: bitext tickets, airline tweets, invoice PDFs."""

import pytest

from processors.datasets import load_examples, sample
from processors.evaluate import evaluate
from processors.tiers import LoadedTier
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="package")
def mix():
    bitext = sample(load_examples(SHARED_DATA / "tickets" / "bitext" / "validation.csv"), 10, stratify="category")
    airline = sample(load_examples(SHARED_DATA / "sentiment" / "airline_dev.csv"), 3, stratify="sentiment")
    invoices = sorted(load_examples(SHARED_DATA / "invoices" / "invoice2data"), key=lambda e: len(e.text))[:2]
    return bitext + airline + invoices


@pytest.fixture(scope="package")
def evaluation(config, small_runtime, mix):
    return evaluate(config, mix, loaded={"small": LoadedTier(small_runtime)})
