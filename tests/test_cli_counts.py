"""Counts on the command line are checked before any work starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from openpfi.cli import app


@pytest.mark.parametrize("args, option", [
    (["bench", "train", "--steps", "0"], "--steps"),
    (["bench", "round", "--memory-clients", "-3"], "--memory-clients"),
    (["bench", "silent", "--seeds", "0"], "--seeds"),
])
def test_a_count_below_one_is_refused(args: list[str], option: str, tmp_path):
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b.json")], env={"COLUMNS": "200"})
    assert res.exit_code == 2
    assert f"Invalid value for '{option}'" in res.output and "x>=1" in res.output
    assert not (tmp_path / "b.json").exists()
