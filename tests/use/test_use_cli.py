"""The three commands' help, and their refusals that need no trained run: one line, exit 2,
nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedgray.cli import main


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_each_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: fedgray {command}" in capsys.readouterr().out


def test_a_folder_that_is_no_run_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images").mkdir()
    assert main(["predict", str(tmp_path), str(tmp_path / "images")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fedgray: error: {tmp_path}: not a finished run (no config.yaml)"
    assert main(["export", str(tmp_path), "--signing-key", str(tmp_path / "none.pem")]) == 2
    assert "signing key file not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
