"""Tests for reading/writing AU annotations in OpenFace, combined-CSV and reference-pickle formats."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from ganimation.aus import NUM_AUS, OPENFACE_COLUMNS
from ganimation.openface import (
    AnnotationError,
    load_annotations,
    raw_to_model,
    read_au_csv,
    read_au_pickle,
    read_id_list,
    read_openface_csv,
    read_openface_sequence,
    safe_pickle_load,
    write_au_csv,
)

RAW = np.round(np.linspace(0.0, 5.0, NUM_AUS), 3)
PRESENCE = [name.replace("_r", "_c") for name in OPENFACE_COLUMNS]


def openface_image_csv(path: Path, rows: list[tuple[float, np.ndarray]], *, spaced: bool = False) -> Path:
    """A FaceLandmarkImg-style CSV: face, confidence, some landmarks, AU_r then AU_c columns."""
    headers = ["face", "confidence", "x_0", "y_0", *OPENFACE_COLUMNS, *PRESENCE]
    lines = [(", " if spaced else ",").join(headers)]
    for index, (confidence, raw) in enumerate(rows):
        values = [str(index), f"{confidence}", "10.5", "20.5", *(f"{v:.3f}" for v in raw), *(["1"] * NUM_AUS)]
        lines.append((", " if spaced else ",").join(values))
    path.write_text("\n".join(lines) + "\n")
    return path


def combined_csv(path: Path, rows: list[tuple[str, list[str]]], name_column: str = "filename") -> Path:
    lines = [",".join([name_column, "identity", *OPENFACE_COLUMNS, *PRESENCE])]
    for name, values in rows:
        lines.append(",".join([name, "p1", *values, *(["0"] * NUM_AUS)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def raw_cells(raw: np.ndarray = RAW) -> list[str]:
    return [f"{value:g}" for value in raw]


# --------------------------------------------------------------------------- per-image CSV


@pytest.mark.parametrize("spaced", [False, True])
def test_per_image_csv_with_and_without_header_spaces(tmp_path: Path, spaced: bool) -> None:
    path = openface_image_csv(tmp_path / "0001.csv", [(0.98, RAW)], spaced=spaced)
    aus = read_openface_csv(path)
    assert aus.dtype == np.float32 and aus.shape == (NUM_AUS,)
    np.testing.assert_allclose(aus, RAW / 5.0, atol=1e-6)


def test_per_image_csv_picks_most_confident_face(tmp_path: Path) -> None:
    other = np.full(NUM_AUS, 1.0)
    path = openface_image_csv(tmp_path / "two.csv", [(0.4, other), (0.95, RAW), (0.7, other)])
    np.testing.assert_allclose(read_openface_csv(path), RAW / 5.0, atol=1e-6)


def test_per_image_csv_without_confidence_takes_first_row(tmp_path: Path) -> None:
    path = tmp_path / "noconf.csv"
    path.write_text(",".join(OPENFACE_COLUMNS) + "\n" + ",".join(raw_cells()) + "\n" + ",".join(["1"] * NUM_AUS) + "\n")
    np.testing.assert_allclose(read_openface_csv(path), RAW / 5.0, atol=1e-6)


def test_tiny_excess_is_clipped_but_real_excess_reported(tmp_path: Path) -> None:
    raw = RAW.copy()
    raw[-1] = 5.0000001
    raw[0] = -0.0000001
    aus = raw_to_model(raw, source="x")
    assert aus.max() == 1.0 and aus.min() == 0.0
    raw[3] = 5.4
    with pytest.raises(AnnotationError, match=r"x: .*AU05_r=5\.4"):
        raw_to_model(raw, source="x")


# --------------------------------------------------------------------------- combined CSV


def test_combined_csv_reads_extras_and_ignores_presence_columns(tmp_path: Path) -> None:
    path = combined_csv(tmp_path / "aus.csv", [("images/a.png", raw_cells()), ("b.png", ["0"] * NUM_AUS)])
    table = read_au_csv(path)
    assert [r.filename for r in table.records] == ["a.png", "b.png"]
    np.testing.assert_allclose(table.records[0].aus, RAW / 5.0, atol=1e-6)
    assert table.records[0].extras == {"identity": "p1"}
    assert table.records[0].identity == "p1"
    assert not table.problems


@pytest.mark.parametrize("column", ["File", " image ", "PATH", "input"])
def test_combined_csv_accepts_filename_column_aliases(tmp_path: Path, column: str) -> None:
    path = combined_csv(tmp_path / "labels.csv", [("x.jpg", raw_cells())], name_column=column)
    assert read_au_csv(path).records[0].filename == "x.jpg"


def test_write_read_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    aus = rng.uniform(0, 1, size=(3, NUM_AUS)).astype(np.float32)
    rows = [(f"{i:04d}.png", aus[i], {"identity": f"id{i % 2}"}) for i in range(3)]
    path = write_au_csv(tmp_path / "out" / "aus.csv", rows)
    header = path.read_text().splitlines()[0]
    assert header == ",".join(["filename", "identity", *OPENFACE_COLUMNS])
    table = read_au_csv(path)
    assert [r.filename for r in table.records] == ["0000.png", "0001.png", "0002.png"]
    assert [r.identity for r in table.records] == ["id0", "id1", "id0"]
    np.testing.assert_allclose(np.stack([r.aus for r in table.records]), aus, atol=1e-4)
    assert not list(path.parent.glob(".*tmp*")), "no temporary file left behind"


def test_lenient_read_collects_bad_rows(tmp_path: Path) -> None:
    bad = raw_cells()
    bad[2] = "nan"
    path = combined_csv(tmp_path / "aus.csv", [("a.png", raw_cells()), ("b.png", bad), ("a.png", raw_cells())])
    table = read_au_csv(path, strict=False)
    assert [r.filename for r in table.records] == ["a.png"]
    assert len(table.problems) == 2
    assert "row 3" in table.problems[0] and "AU04_r" in table.problems[0]
    assert "duplicate" in table.problems[1]


# --------------------------------------------------------------------------- errors


def assert_one_line(error: pytest.ExceptionInfo[AnnotationError], *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError) as error:
        read_openface_csv(tmp_path / "nope.csv")
    assert_one_line(error, "nope.csv", "no such")


def test_error_no_au_columns(tmp_path: Path) -> None:
    path = tmp_path / "landmarks.csv"
    path.write_text("face,confidence,x_0\n0,0.9,1.0\n")
    with pytest.raises(AnnotationError) as error:
        read_openface_csv(path)
    assert_one_line(error, "landmarks.csv", "no AU intensity columns", "AU01_r", "AU45_r")


def test_error_some_au_columns_missing(tmp_path: Path) -> None:
    columns = [c for c in OPENFACE_COLUMNS if c not in ("AU12_r", "AU45_r")]
    path = tmp_path / "partial.csv"
    path.write_text(",".join(columns) + "\n" + ",".join(["1"] * len(columns)) + "\n")
    with pytest.raises(AnnotationError) as error:
        read_openface_csv(path)
    assert_one_line(error, "partial.csv", "missing AU columns", "AU12_r, AU45_r")
    assert "AU01_r" not in str(error.value)


def test_error_missing_filename_column(tmp_path: Path) -> None:
    path = tmp_path / "aus.csv"
    path.write_text("identity," + ",".join(OPENFACE_COLUMNS) + "\np1," + ",".join(raw_cells()) + "\n")
    with pytest.raises(AnnotationError) as error:
        read_au_csv(path)
    assert_one_line(error, "aus.csv", "no file-name column", "filename")


def test_error_non_numeric_value_names_row_and_column(tmp_path: Path) -> None:
    bad = raw_cells()
    bad[8] = "high"
    path = combined_csv(tmp_path / "aus.csv", [("a.png", raw_cells()), ("b.png", bad)])
    with pytest.raises(AnnotationError) as error:
        read_au_csv(path)
    assert_one_line(error, "aus.csv", "row 3", "AU12_r", "'high'", "not a number")


def test_error_nan_value_names_row_and_column(tmp_path: Path) -> None:
    bad = raw_cells()
    bad[0] = "NaN"
    path = combined_csv(tmp_path / "aus.csv", [("a.png", bad)])
    with pytest.raises(AnnotationError) as error:
        read_au_csv(path)
    assert_one_line(error, "aus.csv", "row 2", "AU01_r", "NaN")


def test_error_out_of_range_value(tmp_path: Path) -> None:
    bad = raw_cells()
    bad[4] = "7.5"
    path = combined_csv(tmp_path / "aus.csv", [("a.png", bad)])
    with pytest.raises(AnnotationError) as error:
        read_au_csv(path)
    assert_one_line(error, "aus.csv", "row 2", "AU06_r=7.5", "outside")


def test_error_face_not_found(tmp_path: Path) -> None:
    path = openface_image_csv(tmp_path / "empty.csv", [])
    with pytest.raises(AnnotationError) as error:
        read_openface_csv(path)
    assert_one_line(error, "empty.csv", "no data rows")


def test_error_unknown_layout(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AnnotationError) as error:
        load_annotations(tmp_path, [tmp_path / "a.png"])
    assert_one_line(error, str(tmp_path), "unknown layout")


# --------------------------------------------------------------------------- pickles and id lists


def test_pickle_layout_with_id_lists(tmp_path: Path) -> None:
    data = {"0001": RAW.copy(), "0002": np.zeros(NUM_AUS, dtype=np.float32), "0003": np.full(NUM_AUS, 5.0)}
    for protocol in (2, 4, 5):
        (tmp_path / "aus_openface.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
        table = read_au_pickle(tmp_path / "aus_openface.pkl")
        assert sorted(r.filename for r in table.records) == ["0001", "0002", "0003"]
        aus = {r.filename: r.aus for r in table.records}
        np.testing.assert_allclose(aus["0001"], RAW / 5.0, atol=1e-6)
        np.testing.assert_allclose(aus["0003"], 1.0)
    (tmp_path / "train_ids.csv").write_text("0001\n0002\n")
    (tmp_path / "test_ids.csv").write_text("filename\nimgs/0003.jpg\n\n")
    assert read_id_list(tmp_path / "train_ids.csv") == ["0001", "0002"]
    assert read_id_list(tmp_path / "test_ids.csv") == ["0003.jpg"]
    images = [tmp_path / "imgs" / f"{stem}.jpg" for stem in ("0001", "0002", "0003", "0004")]
    annotations = load_annotations(tmp_path, images)
    assert annotations.layout == "pickle"
    assert [annotations.lookup(image) for image in images] == ["0001", "0002", "0003", None]


def test_pickle_with_bad_entry_reported(tmp_path: Path) -> None:
    data = {"ok": RAW, "short": np.zeros(3), "nan": np.full(NUM_AUS, np.nan)}
    path = tmp_path / "aus_openface.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(AnnotationError, match="aus_openface.pkl"):
        read_au_pickle(path)
    table = read_au_pickle(path, strict=False)
    assert [r.filename for r in table.records] == ["ok"]
    assert len(table.problems) == 2 and all("aus_openface.pkl" in p for p in table.problems)


class _Exploit:
    """Reduces to os.system: what a hostile pickle would do on a plain pickle.load."""

    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("echo should-never-run",))


class _EvalExploit:
    def __reduce__(self):  # noqa: ANN204
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("payload", [_Exploit(), _EvalExploit(), {"id": _Exploit()}])
def test_restricted_unpickler_refuses_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: object) -> None:
    path = tmp_path / "aus_openface.pkl"
    path.write_bytes(pickle.dumps(payload))
    # Belt and braces: should the unpickler ever call os.system, it would only be recorded.
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args) or 0)
    with pytest.raises(AnnotationError) as error:
        safe_pickle_load(path)
    assert_one_line(error, "aus_openface.pkl", "refusing")
    assert calls == []


def test_safe_pickle_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "aus_openface.pkl"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(AnnotationError, match="aus_openface.pkl"):
        safe_pickle_load(path)


def test_empty_id_list_is_empty(tmp_path: Path) -> None:
    (tmp_path / "test_ids.csv").write_text("")
    assert read_id_list(tmp_path / "test_ids.csv") == []


# --------------------------------------------------------------------------- sequences


def write_sequence(path: Path, success: list[int], *, spaced: bool = True) -> Path:
    headers = ["frame", "face_id", "timestamp", "confidence", "success", *OPENFACE_COLUMNS, *PRESENCE]
    sep = ", " if spaced else ","
    lines = [sep.join(headers)]
    for index, ok in enumerate(success):
        raw = np.full(NUM_AUS, index * 0.5) if ok else np.zeros(NUM_AUS)
        values = [str(index + 1), "0", f"{index / 30:.3f}", "0.98" if ok else "0", str(ok),
                  *(f"{v:.2f}" for v in raw), *(["0"] * NUM_AUS)]
        lines.append(sep.join(values))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_openface_sequence(tmp_path: Path) -> None:
    path = write_sequence(tmp_path / "video.csv", [1, 1, 0, 1])
    frames, aus = read_openface_sequence(path)
    assert frames.tolist() == [1, 2, 4]
    assert aus.shape == (3, NUM_AUS) and aus.dtype == np.float32
    np.testing.assert_allclose(aus[:, 0], [0.0, 0.1, 0.3], atol=1e-6)
    frames_all, aus_all = read_openface_sequence(path, drop_failed=False)
    assert frames_all.tolist() == [1, 2, 3, 4] and aus_all.shape == (4, NUM_AUS)


def test_read_sequence_falls_back_to_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "ts.csv"
    path.write_text("timestamp," + ",".join(OPENFACE_COLUMNS) + "\n"
                    + "\n".join(f"{t}," + ",".join(["1"] * NUM_AUS) for t in (0.0, 0.04)) + "\n")
    times, aus = read_openface_sequence(path)
    assert times.dtype == np.float64 and times.tolist() == [0.0, 0.04]
    np.testing.assert_allclose(aus, 0.2)


def test_read_sequence_all_failed_is_an_error(tmp_path: Path) -> None:
    path = write_sequence(tmp_path / "lost.csv", [0, 0])
    with pytest.raises(AnnotationError) as error:
        read_openface_sequence(path)
    assert_one_line(error, "lost.csv", "no usable frames")
