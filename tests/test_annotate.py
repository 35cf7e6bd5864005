"""``ganimation annotate``: photos, folders and videos in, a data set ``prepare`` accepts out."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ganimation.annotate import CSV_NAME, IMAGES, JOURNAL, annotate, read_journal
from ganimation.aus import NUM_AUS, OPENFACE_COLUMNS
from ganimation.faces import sample_photo_path
from ganimation.files import load_image, save_image
from ganimation.video import write_video

from support import environment


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of photos (two people in sub-folders, loose photos), a faceless, a tiny-faced and a
    broken file, and a 6-frame video, all made from the package's sample photo."""
    root = tmp_path_factory.mktemp("inputs")
    sample = load_image(sample_photo_path())
    person = root / "photos" / "person_a"
    person.mkdir(parents=True)
    save_image(person / "a1.png", sample)
    save_image(person / "a2.jpg", sample[:, ::-1])
    (root / "photos" / "person_b").mkdir()
    save_image(root / "photos" / "person_b" / "b1.png", cv2.resize(sample, (384, 384), interpolation=cv2.INTER_AREA))
    save_image(root / "photos" / "empty.png", np.full((200, 300, 3), 128, np.uint8))
    save_image(root / "photos" / "tiny.png", cv2.resize(sample, (96, 96), interpolation=cv2.INTER_AREA))
    (root / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "photos" / "notes.txt").write_text("not an image")
    frames = [np.ascontiguousarray(sample[i * 4:i * 4 + 400, 50:450]) for i in range(6)]
    write_video(root / "clip.mp4", frames, fps=10)
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_annotate_writes_a_data_set_prepare_accepts(inputs: Path, tmp_path: Path) -> None:
    from ganimation.data import validate_dataset

    out = tmp_path / "data"
    report = annotate([inputs / "photos", inputs / "clip.mp4"], out, size=64, every=2, workers=1, progress=False)
    assert dict(report.counts) == {"ok": 6, "no face": 1, "too small": 1, "unreadable": 1}
    assert report.faces == 6 and report.reused == 0
    rows = read_csv(out / CSV_NAME)
    assert len(rows) == 6
    assert set(OPENFACE_COLUMNS) <= set(rows[0]) and {"filename", "identity", "source"} <= set(rows[0])
    identities = sorted({row["identity"] for row in rows})
    assert identities == ["clip", "person_a", "person_b"]
    for row in rows:
        crop = load_image(out / IMAGES / row["filename"])
        assert crop.shape == (64, 64, 3)
        smile = float(row["AU12_r"])
        assert 2.5 <= smile <= 5.0, row  # the sample face smiles, on OpenFace's 0-5 scale
    video_rows = [row for row in rows if row["identity"] == "clip"]
    assert [row["source"].rsplit("#", 1)[1] for row in video_rows] == ["000000", "000002", "000004"]
    report = validate_dataset(out)
    assert report.ok and report.usable == 6 and report.error is None


def test_rerun_does_only_what_is_missing(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    annotate([inputs / "photos"], out, size=32, workers=1, progress=False)
    journal = out / JOURNAL
    lines = journal.read_text().splitlines()
    assert len(lines) == 6  # every photo, whatever happened to it
    first = read_csv(out / CSV_NAME)
    # an interrupted run: the last record cut in half, one crop never written
    journal.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    again = annotate([inputs / "photos"], out, size=32, workers=1, progress=False)
    assert again.reused == 5 and sum(again.counts.values()) == 1
    assert read_csv(out / CSV_NAME) == first
    assert len(read_journal(journal)) == 6


def test_two_workers_give_the_same_labels(inputs: Path, tmp_path: Path) -> None:
    one = annotate([inputs / "photos" / "person_a"], tmp_path / "one", size=32, workers=1, progress=False)
    two = annotate([inputs / "photos" / "person_a"], tmp_path / "two", size=32, workers=2, progress=False)
    assert one.faces == two.faces == 2
    rows_one, rows_two = read_csv(tmp_path / "one" / CSV_NAME), read_csv(tmp_path / "two" / CSV_NAME)
    assert rows_one == rows_two


def test_journal_ignores_broken_lines(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL
    good = {"key": "a.png", "identity": "a", "faces": [], "outcome": "no face"}
    path.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({"key": "b", "outcome": "??"}) + "\n")
    assert read_journal(path) == {"a.png": good}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ganimation", *args], capture_output=True, text=True, cwd=cwd,
                          env=environment(), timeout=300)


def test_cli_reports_counts_and_refuses_missing_inputs(inputs: Path, tmp_path: Path) -> None:
    done = run_cli("annotate", str(inputs / "photos" / "person_b"), str(inputs / "photos" / "empty.png"),
                   "-o", str(tmp_path / "out"), "--size", "32", "--workers", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 photos/frames read (1 ok, 1 no face)" in done.stdout
    missing = run_cli("annotate", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x"), cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].endswith("no such file or folder")
    bad = run_cli("annotate", str(inputs / "photos"), "-o", str(tmp_path / "y"), "--every", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--every must be at least 1" in bad.stderr


def test_a_missing_face_model_stops_before_any_work(inputs: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from ganimation import facemesh

    monkeypatch.setenv(facemesh.MODEL_ENV, str(tmp_path / "gone.task"))
    with pytest.raises(facemesh.FaceModelMissingError, match="not a file"):
        annotate([inputs / "photos"], tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_inputs_without_a_face_write_no_data_set(inputs: Path, tmp_path: Path) -> None:
    from ganimation.annotate import AnnotateError

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(range(256)) * 20)
    out = tmp_path / "out"
    with pytest.raises(AnnotateError, match=r"no face found in the inputs \(1 no face, 2 unreadable\): no data set"):
        annotate([inputs / "photos" / "empty.png", inputs / "photos" / "broken.jpg", corrupt], out, workers=1,
                 progress=False)
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(AnnotateError, match="no face found"):
        annotate([inputs / "photos" / "empty.png"], kept, workers=1, progress=False)
    assert kept.is_dir() and not (kept / CSV_NAME).exists()  # a folder the user made is left in place
    file_out = tmp_path / "aus.csv"
    file_out.write_text("mine")
    with pytest.raises(AnnotateError, match=r"aus\.csv: is a file"):
        annotate([inputs / "photos" / "person_b"], file_out, workers=1, progress=False)
    assert file_out.read_text() == "mine"

