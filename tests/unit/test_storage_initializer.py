"""The storage initializer's command line, as KServe calls it: pairs of URI and directory."""

from __future__ import annotations

from pathlib import Path

from aios.connectors.storage_initializer import main


def test_each_uri_is_fetched_into_its_directory_by_kserves_library(tmp_path: Path) -> None:
    source = tmp_path / "bucket" / "model" / "1"
    source.mkdir(parents=True)
    (source / "model.py").write_text("SIGNATURES = {}\n")
    target = tmp_path / "mnt-models"
    assert main([str(tmp_path / "bucket"), str(target)]) == 0
    assert (target / "model" / "1" / "model.py").read_text() == "SIGNATURES = {}\n"


def test_an_odd_number_of_arguments_is_refused(capsys) -> None:
    assert main(["s3://bucket/model"]) == 2
    assert "usage" in capsys.readouterr().err
