"""`dermalens predict` in-process: its inputs, its output paths and what it leaves on disk."""
import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from dermalens.cli import main
from conftest import FIXTURES

LESION = FIXTURES / "fullres" / "ISIC_0024311.jpg"


def _lesion(folder: Path, name: str = "a.jpg") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(LESION, folder / name))


def test_an_existing_file_whose_name_looks_like_a_pattern_is_read_as_that_file(tmp_path):
    from dermalens.predict import expand_inputs
    img = _lesion(tmp_path, "scan[1].jpg")
    assert expand_inputs([str(img)]) == ([img], [])


def test_one_image_named_two_ways_is_predicted_once(tmp_path, monkeypatch):
    from dermalens.predict import expand_inputs
    img = _lesion(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    paths, _ = expand_inputs(["in/a.jpg", str(img), "in", "in/../in/*.jpg"])
    assert paths == [Path("in/a.jpg")]
