import pytest

from flows.cli import main


def test_bad_date_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--date", "20-11-2026"])
    assert exit_info.value.code == 2
    assert "not a date" in capsys.readouterr().err


def test_missing_config_file_fails_cleanly(capsys, tmp_path):
    code = main(["run", "--date", "2026-11-20", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path)])
    assert code == 1
    assert "does not exist" in capsys.readouterr().err
