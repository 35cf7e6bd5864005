"""Evaluation on real photos (``evaluate --photos``), with the package's sample photo and a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ganimation import cli, realeval
from ganimation.faces import sample_photo_path
from ganimation.files import load_image, save_image
from ganimation.inference import GANimation
from support import tiny_model_file

@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    save_image(folder / "astronaut.png", load_image(sample_photo_path()))
    save_image(folder / "wall.png", np.full((120, 160, 3), 200, np.uint8))  # no face: skipped
    (folder / "notes.txt").write_text("ignored")
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.safetensors", critic=False, seed=3)


def test_copy_and_a_model_are_scored_on_the_faces_found(photos: Path, tiny: Path) -> None:
    report = realeval.evaluate_photos({"copy": None, "tiny": GANimation.load(tiny, device="cpu")},
                                      realeval.list_photos(photos), progress=False)
    assert report["photos"] == 1
    copy, model = report["methods"]["copy"], report["methods"]["tiny"]
    assert copy["response"] == 0.0 and copy["leakage"] == 0.0 and copy["zero_edit_psnr"] == realeval.PSNR_CAP
    assert copy["au_error"] > 0.2  # the astronaut smiles: far from sad, surprise, ...
    assert set(copy["response_by_expression"]) == set(realeval.SUITE)
    # an untrained model scribbles over the face but never outside it
    assert model["zero_edit_psnr"] < 40 and model["outside"] == 0.0
    assert model["seconds_per_edit"] > 0


def test_cli_writes_the_report_and_refuses_an_empty_folder(photos: Path, tiny: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--photos", str(photos), "--checkpoint", str(tiny), "-o", str(out)])
    assert code == 0
    report = json.loads((out / "real_evaluation.json").read_text())
    assert list(report["methods"]) == ["copy", "model"] and report["photos"] == 1
    assert "| copy | 0.000 |" in (out / "real_evaluation.md").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert cli.main(["evaluate", "--photos", str(empty), "--checkpoint", str(tiny)]) == 2
    assert "no photos" in capsys.readouterr().err
