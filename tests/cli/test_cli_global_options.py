"""The top-level ``nosend`` parser: ``--config`` before or after the subcommand."""

from pathlib import Path

from nosend.cli import main


def test_config_before_the_subcommand(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "mail.cfg"
    assert main(["--config", str(cfg), "config", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(cfg)


def test_config_after_the_subcommand_wins(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    first, second = tmp_path / "a.cfg", tmp_path / "b.cfg"
    assert main(["--config", str(first), "config", "path", "--config", str(second)]) == 0
    assert capsys.readouterr().out.strip() == str(second)
