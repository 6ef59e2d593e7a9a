import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.config import Config, LabelTask, TierModel, load_config

SLUICEGATE = str(Path(sys.executable).parent / "sluicegate")
LEAK = "sk-LEAK-9f8e7d6c5b4a"
# A stray key (the secret itself pasted into the file) and a secret of the wrong type: both are errors,
# and the errors name the keys, never the values.
SECRETS_IN_FILE = f"""
[large]
runtime = "http"
endpoint = "https://api.example.com/v1"
model = "big"
api_key = "{LEAK}"
[pdf]
passwords = "{LEAK}-pw"
"""


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


def test_a_source_s_own_field_thresholds_load_beside_the_shared_ones(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[thresholds.fields]\nsmall = 0.5\n[thresholds."fields:pdf"]\nsmall = 0.2\nlarge = 0.1\n')
    thresholds = load_config(path).thresholds
    assert thresholds["fields"].small == 0.5 and (thresholds["fields:pdf"].small, thresholds["fields:pdf"].large) == (
        0.2, 0.1)


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


def test_config_errors_name_the_key_never_the_value(tmp_path):
    path = tmp_path / "secrets.toml"
    path.write_text(SECRETS_IN_FILE)
    with pytest.raises(ValidationError) as e:
        load_config(path)
    message = str(e.value)
    assert LEAK not in message and LEAK not in repr(e.value.errors(include_input=False))
    assert "large.api_key" in message and "Extra inputs are not permitted" in message
    assert "pdf.passwords" in message and "valid dictionary" in message


# TOML syntax errors on the line holding the secret: tomllib names the line and column, not the value.
BAD_TOML = [f'[large]\nmodel = "m"\napi_key = {LEAK}\n',  # unquoted
            f'[large]\nmodel = "m"\napi_key = "{LEAK}\n',  # unterminated string
            f'[large]\nmodel = "m"\napi_key = "{LEAK}" trailing\n']


@pytest.mark.parametrize("text", BAD_TOML)
def test_toml_syntax_errors_give_the_line_never_the_value(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match="line 3") as e:
        load_config(path)
    assert LEAK not in str(e.value)


@pytest.mark.parametrize("text", [SECRETS_IN_FILE, BAD_TOML[1]], ids=["invalid", "toml_syntax"])
def test_cli_never_prints_a_secret_from_a_bad_config(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    done = subprocess.run([SLUICEGATE, "run", "--config", str(path), "--date", "2026-11-20", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=300, check=False,
                          cwd=tmp_path)
    assert done.returncode == 1 and "run failed" in done.stderr
    assert LEAK not in done.stdout + done.stderr
    # Still says where: the key for a validation error, the line for a TOML syntax error.
    assert "large.api_key" in done.stderr if text == SECRETS_IN_FILE else "line 3" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("root", ["s3://bucket/sluicegate", "gs://bucket/out", "az://container/out",
                                  "abfs://container@account.dfs.core.windows.net/out", "https://example.com/out",
                                  "memory://out", "S3://KEYID:SECRETKEY@bucket/out"])
def test_object_store_output_root_is_refused_not_written_to_a_local_folder(tmp_path, root):
    """`s3://bucket` used to become a local folder named `s3:`."""
    path = tmp_path / "c.toml"
    path.write_text(f'[output]\nroot = "{root}"\n')
    with pytest.raises(ValidationError) as e:
        load_config(path)
    message = str(e.value)
    assert "output.root" in message and "not supported as output roots" in message
    assert "local or NFS" in message and "atomic renames" in message
    assert "SECRETKEY" not in message and root[5:] not in message  # only the scheme is echoed
    from schemas.config import local_output_root  # the nightly flow checks --out with it

    with pytest.raises(ValueError, match="not supported as output roots"):
        local_output_root(root)


def test_local_and_file_url_output_roots(tmp_path):
    from schemas.config import local_output_root

    assert local_output_root("out") == "out" and local_output_root("/srv/out") == "/srv/out"
    assert local_output_root("file:///srv/sluice%20gate") == "/srv/sluice gate"
    assert local_output_root("file://localhost/srv/out") == "/srv/out"
    for bad in ("", "file://", "file://otherhost/srv/out"):
        with pytest.raises(ValueError):
            local_output_root(bad)
    path = tmp_path / "c.toml"
    path.write_text(f'[output]\nroot = "file://{tmp_path}/tables"\n')
    assert load_config(path).output.root == str(tmp_path / "tables")
    path.write_text('[output]\nroot = "tables"\n')
    assert load_config(path).output.root == str(tmp_path / "tables")  # relative: beside the file


def test_key_over_plain_http_to_a_remote_host_needs_allow_insecure(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[large]\nruntime = "http"\nendpoint = "http://10.0.0.5:8080"\nmodel = "m"\n'
                    'api_key_env = "SLUICEGATE_LARGE_API_KEY"\n')
    with pytest.raises(ValidationError, match=r"(?s)clear text to 10\.0\.0\.5.*allow_insecure = true"):
        load_config(path)
    path.write_text(path.read_text() + "allow_insecure = true\n")
    assert load_config(path).large.allow_insecure
    # No key, https, or loopback: nothing to refuse.
    assert not TierModel(runtime="http", model="m", endpoint="http://10.0.0.5:8080").allow_insecure
    for endpoint in ("https://10.0.0.5", "http://127.0.0.1:8080", "http://localhost", "http://[::1]:1"):
        TierModel(runtime="http", model="m", endpoint=endpoint, api_key_env="K", api_key_secret="s")


def test_the_total_check_is_for_amount_fields_only():
    from schemas.config import FieldSpec

    assert FieldSpec(name="total_amount", type="amount", checks=["total"]).checks == ["total"]
    with pytest.raises(ValueError, match="'total' is for amount fields"):
        FieldSpec(name="invoice_number", type="id", checks=["total"])
    with pytest.raises(ValueError):
        FieldSpec(name="total_amount", type="amount", checks=["largest"])  # an unknown check is a typo


def test_model_copies_are_for_the_in_process_runtime_only():
    assert TierModel(model="m", copies=2).copies == 2
    with pytest.raises(ValidationError, match="copies is for the in-process runtime"):
        TierModel(runtime="http", model="m", endpoint="http://127.0.0.1:8080", copies=2)
    with pytest.raises(ValidationError):
        TierModel(model="m", copies=0)
