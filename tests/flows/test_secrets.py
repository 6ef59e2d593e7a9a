"""Secrets from Prefect Secret blocks on a real (temporary) Prefect server: PDF passwords."""

import json

import pytest

from processors.ingest.pdf import PASSWORDS_ENV, candidate_passwords, read_pdf
from tests.conftest import FIXTURE_DATE, FIXTURES

ENCRYPTED = FIXTURES / "inbox" / "pdf" / FIXTURE_DATE / "encrypted_with_password.pdf"


def _config(tmp_path, secret: str):
    path = tmp_path / "sluicegate.toml"
    path.write_text(f'[pdf]\npasswords_secret = "{secret}"\n')
    return str(path)


@pytest.fixture(scope="module")
def server(prefect_in_process):
    return prefect_in_process


def test_pdf_passwords_come_from_a_secret_block_and_the_environment_wins(server, tmp_path, monkeypatch):
    from prefect.blocks.system import Secret

    from flows.nightly import resolve_config

    monkeypatch.delenv(PASSWORDS_ENV, raising=False)
    Secret(value={"encrypted_with_password.pdf": "asdfzxcv", "other-*.pdf": "from-block"}).save(
        "sg-pdf-passwords", overwrite=True)
    monkeypatch.setenv(PASSWORDS_ENV, json.dumps({"other-*.pdf": "from-env"}))
    config, _ = resolve_config(_config(tmp_path, "sg-pdf-passwords"), load_secrets=True)
    assert candidate_passwords("in/encrypted_with_password.pdf", config.pdf) == ["asdfzxcv"]
    assert candidate_passwords("in/other-1.pdf", config.pdf) == ["from-env"]
    # The password from the block really opens the file (no password given in the configuration file).
    document = read_pdf(str(ENCRYPTED), ENCRYPTED.read_bytes(), config.pdf)
    assert getattr(document, "reason", None) is None and document.text.strip()


def test_a_malformed_or_missing_secret_fails_naming_the_block_never_its_value(server, tmp_path, monkeypatch):
    from prefect.blocks.system import Secret

    from flows.nightly import resolve_config

    monkeypatch.delenv(PASSWORDS_ENV, raising=False)
    Secret(value="not json: hunter2-secret").save("sg-bad-passwords", overwrite=True)
    with pytest.raises(ValueError, match="Prefect Secret 'sg-bad-passwords' is not valid JSON") as bad:
        resolve_config(_config(tmp_path, "sg-bad-passwords"), load_secrets=True)
    assert "hunter2" not in str(bad.value)
    with pytest.raises(RuntimeError, match="cannot load Prefect Secret 'sg-nope'"):
        resolve_config(_config(tmp_path, "sg-nope"), load_secrets=True)
