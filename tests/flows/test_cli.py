"""The installed `sluicegate` console script, run as a user runs it (a subprocess)."""

import subprocess
import sys
from pathlib import Path

import pytest

SLUICEGATE = str(Path(sys.executable).parent / "sluicegate")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SLUICEGATE, *args], capture_output=True, text=True, timeout=120, check=False)


def test_bad_date_is_a_usage_error():
    done = _run("run", "--date", "20-11-2026")
    assert done.returncode == 2 and "not a date" in done.stderr


def test_missing_config_file_fails_cleanly(tmp_path):
    done = _run("run", "--date", "2026-11-20", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path))
    assert done.returncode == 1 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_lists_the_commands():
    done = _run("--help")
    assert done.returncode == 0 and "run" in done.stdout


@pytest.mark.slow
def test_backfill_prints_per_stage_progress_lines(tmp_path, prefect_api):
    """A one-date backfill of two tickets and a malformed line: one stderr line per stage, stdout untouched.
    It runs as without the 'finetune' extra: the nightly path must not import PyTorch, transformers or PEFT."""
    import re

    from tests.conftest import FIXTURES
    from tests.test_packaging import without_training_stack

    lines = (FIXTURES / "inbox" / "tickets" / "2026-11-20" / "support_export.jsonl").read_text().splitlines()
    folder = tmp_path / "inbox" / "tickets" / "2026-11-05"
    folder.mkdir(parents=True)
    (folder / "export.jsonl").write_text("\n".join([lines[0], lines[1], '{"broken": ']) + "\n")
    config = tmp_path / "sluicegate.toml"
    config.write_text('[inputs]\ninbox = "inbox"\nsources = ["tickets"]\n[output]\nroot = "out"\n'
                      '[[tasks]]\nname = "sentiment"\nlabels = ["negative", "neutral", "positive"]\n'
                      '[small]\nmodel = "gemma3-270m"\nparallel_sequences = 2\n'
                      '[large]\nmodel = "qwen2.5-coder-1.5b-instruct"\nprompt_style = "chatml"\n'
                      'contextual_calibration = false\nparallel_sequences = 2\n'
                      '[tickets.columns."*"]\nid = "ticket_id"\n')
    env = {**without_training_stack(), "PREFECT_API_URL": prefect_api}
    done = subprocess.run([SLUICEGATE, "backfill", "--start", "2026-11-05", "--end", "2026-11-05", "--config",
                           str(config)], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    progress = [line.split("  ", 1)[1] for line in done.stderr.splitlines()
                if re.match(r"\d\d:\d\d:\d\d  \S", line)]
    expected = [r"backfill: 2026-11-05 \(1 of 1\)",
                r"discover: 1 files for 2026-11-05 \(tickets 1\); 0 inputs already done",
                r"ingest: 3 inputs \(0 already done, kept\)",
                r"small tier: 2 documents",
                r"large tier: \d documents escalated",
                r"write: errors 1 rows, fields 0 rows, labels 2 rows, manifest 3 rows, results 2 rows",
                r"check: ok \(inputs 3 = results 2 \+ errors 1\)",
                r"backfill: 1 of 1 dates completed"]
    remaining = iter(progress)  # in this order, other lines (the large tier's batches) may come between
    for pattern in expected:
        assert any(re.fullmatch(pattern, line) for line in remaining), (pattern, progress)
    assert "2026-11-05: completed  inputs 3 = results 2 + errors 1" in done.stdout
    assert "discover:" not in done.stdout


def test_an_object_store_out_is_refused_not_written_to_a_local_folder(tmp_path, monkeypatch, capsys):
    from flows.cli import main  # in-process: the refusal comes before any flow run starts

    monkeypatch.chdir(tmp_path)
    assert main(["run", "--date", "2026-11-20", "--out", "s3://bucket/sluicegate"]) == 1
    assert "s3://" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no folder named "s3:"
