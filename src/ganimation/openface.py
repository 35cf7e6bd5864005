"""Reading and writing facial Action Unit annotations in the formats users actually have.

Supported sources (all intensities on OpenFace's 0-5 scale on disk, model units
``raw / OPENFACE_SCALE`` in memory, in :data:`ganimation.aus.OPENFACE_COLUMNS` order):

* **per-image OpenFace CSVs** written by ``FaceLandmarkImg -aus``: ``faces/0001.png`` with
  ``faces/0001.csv`` (or ``processed/0001.csv`` / ``aus/0001.csv``);
* **one combined CSV** with a file-name column (``filename``, ``file``, ``image``, ``path``
  or ``input``) and the ``AU.._r`` columns, as :func:`write_au_csv` writes it;
* **the reference GANimation layout**: ``imgs/``, ``aus_openface.pkl`` (id -> 17 raw
  intensities) and ``train_ids.csv`` / ``test_ids.csv``;
* **OpenFace FeatureExtraction CSVs** of a video, for driving animations
  (:func:`read_openface_sequence`).

Every problem surfaces as one :class:`AnnotationError` line naming the file, because these
messages end up in front of users who must be able to fix their data from them alone.
"""

from __future__ import annotations

import collections
import csv
import functools
import importlib
import io
import logging
import math
import os
import pickle
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .aus import NUM_AUS, OPENFACE_COLUMNS, OPENFACE_SCALE, check_au_vector
from .files import atomic_output

logger = logging.getLogger(__name__)

#: Column names (lower-case, stripped) accepted as the file-name column of a combined CSV.
FILENAME_COLUMNS: tuple[str, ...] = ("filename", "file", "image", "path", "input")
#: Column name (lower-case, stripped) holding a subject identity, used for leak-free splits.
IDENTITY_COLUMN = "identity"
#: File names tried first when looking for a combined annotation CSV in a dataset root.
COMBINED_CSV_NAMES: tuple[str, ...] = ("aus.csv", "annotations.csv", "labels.csv", "aus_openface.csv")
#: The reference GANimation repository's pickle of id -> raw AU intensities.
PICKLE_NAME = "aus_openface.pkl"
#: Split files of the reference layout and of the synthetic-data generator.
TRAIN_IDS_NAME = "train_ids.csv"
TEST_IDS_NAME = "test_ids.csv"
#: Folders (relative to the dataset root or the image folder) searched for per-image CSVs.
PER_IMAGE_CSV_DIRS: tuple[str, ...] = (".", "processed", "aus")
#: File suffixes treated as images when matching annotation keys to files.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: Raw-scale slack tolerated (and clipped) outside [0, 5]: float noise such as 5.0000001.
RAW_TOLERANCE = 1e-3
#: Header names that may open an id list without being an id.
_ID_LIST_HEADERS = frozenset(FILENAME_COLUMNS + ("id", "ids", "name", "stem"))


class AnnotationError(ValueError):
    """A missing, malformed or unrecognised AU annotation file; the message is one line."""


# --------------------------------------------------------------------------- CSV basics


@dataclass(frozen=True)
class _Table:
    """A CSV file read into stripped headers and raw string rows (row numbers are 1-based file lines)."""

    path: Path
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def column(self, name: str) -> int | None:
        """Index of a column by case-insensitive name, or None."""
        wanted = name.strip().lower()
        for index, header in enumerate(self.headers):
            if header.lower() == wanted:
                return index
        return None

    def cell(self, row: Sequence[str], index: int) -> str:
        return row[index].strip() if index < len(row) else ""


def _read_table(path: Path) -> _Table:
    """Read a CSV, stripping whitespace from headers (some OpenFace versions write ``" AU01_r"``)."""
    if not path.is_file():
        raise AnnotationError(f"{path}: no such annotation file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{path}: cannot read ({error.__class__.__name__}: {error})") from None
    records = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    if not records:
        raise AnnotationError(f"{path}: empty CSV file (no header)")
    headers = tuple(cell.strip() for cell in records[0])
    return _Table(path, headers, tuple(tuple(row) for row in records[1:]))


def _au_columns(table: _Table) -> list[int]:
    """Indices of the 17 ``AU.._r`` columns in model order; names the missing ones otherwise."""
    indices = [table.column(name) for name in OPENFACE_COLUMNS]
    missing = [name for name, index in zip(OPENFACE_COLUMNS, indices) if index is None]
    if missing:
        what = "no AU intensity columns" if len(missing) == NUM_AUS else "missing AU columns"
        raise AnnotationError(f"{table.path}: {what} ({', '.join(missing)}); expected OpenFace AU.._r columns")
    return [index for index in indices if index is not None]


def _has_au_columns(table: _Table) -> bool:
    return all(table.column(name) is not None for name in OPENFACE_COLUMNS)


def raw_to_model(raw: Sequence[float] | np.ndarray, *, source: str) -> np.ndarray:
    """Convert 0-5 OpenFace intensities to model units, clipping float noise only.

    Real out-of-range values (beyond :data:`RAW_TOLERANCE`) and NaN/inf raise, naming
    ``source``, because silently clipping them would hide a wrong scale or a broken file.
    """
    return check_au_vector(raw, source=source, scale=OPENFACE_SCALE, tolerance=RAW_TOLERANCE,
                           names=OPENFACE_COLUMNS, error=AnnotationError)


def _parse_number(table: _Table, line: int, row: Sequence[str], index: int) -> float:
    text = table.cell(row, index)
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{table.path}: row {line}, column {table.headers[index]}: "
                              f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{table.path}: row {line}, column {table.headers[index]}: {text!r} (NaN or infinite)")
    return value


def _row_aus(table: _Table, line: int, row: Sequence[str], columns: Sequence[int]) -> np.ndarray:
    """One CSV row's AUs in model units; the error names file, row and column."""
    raw = [_parse_number(table, line, row, index) for index in columns]
    return raw_to_model(raw, source=f"{table.path}: row {line}")


def _line_number(position: int) -> int:
    """1-based file line of the ``position``-th data row (the header is line 1)."""
    return position + 2


# --------------------------------------------------------------------------- per-image CSVs


def _best_row(table: _Table) -> int:
    """Row position to use when a FaceLandmarkImg CSV lists several faces: most confident first."""
    confidence = table.column("confidence")
    if confidence is None or len(table.rows) == 1:
        return 0
    scores = []
    for row in table.rows:
        try:
            score = float(table.cell(row, confidence))
        except ValueError:
            score = -math.inf
        scores.append(score if math.isfinite(score) else -math.inf)
    return int(np.argmax(scores))


def read_openface_csv(path: str | os.PathLike[str]) -> np.ndarray:
    """AUs (model units, float32 ``(17,)``) of one image from its FaceLandmarkImg CSV.

    With several faces in the image, the row of highest ``confidence`` wins (else the
    first), since a training crop shows one dominant face.
    """
    table = _read_table(Path(path))
    columns = _au_columns(table)
    if not table.rows:
        raise AnnotationError(f"{table.path}: no data rows (OpenFace found no face?)")
    position = _best_row(table)
    if len(table.rows) > 1:
        logger.info("%s: %d faces, using row %d", table.path, len(table.rows), _line_number(position))
    return _row_aus(table, _line_number(position), table.rows[position], columns)


# --------------------------------------------------------------------------- combined CSV


@dataclass(frozen=True, eq=False)
class AURecord:
    """One annotated image of a combined CSV: its file name, AUs in model units and extra columns."""

    filename: str
    aus: np.ndarray
    extras: dict[str, str] = field(default_factory=dict)

    @property
    def identity(self) -> str | None:
        for key, value in self.extras.items():
            if key.strip().lower() == IDENTITY_COLUMN and value.strip():
                return value.strip()
        return None


@dataclass
class AUTable:
    """Result of a lenient read: usable records plus one message per rejected row."""

    path: Path
    records: list[AURecord]
    problems: list[str] = field(default_factory=list)


def _filename_column(table: _Table) -> int:
    for name in FILENAME_COLUMNS:
        index = table.column(name)
        if index is not None:
            return index
    raise AnnotationError(f"{table.path}: no file-name column (expected one of {', '.join(FILENAME_COLUMNS)}); "
                          f"columns are {', '.join(table.headers[:8])}{', ...' if len(table.headers) > 8 else ''}")


def _extra_columns(table: _Table, skip: set[int]) -> list[int]:
    """Columns kept as extras: everything but the file name, AU intensities and AU presences."""
    extras = []
    for index, header in enumerate(table.headers):
        upper = header.upper()
        if index in skip or (upper.startswith("AU") and upper.endswith(("_R", "_C"))):
            continue
        extras.append(index)
    return extras


def _record(table: _Table, position: int, name_column: int, au_columns: Sequence[int],
            extra_columns: Sequence[int]) -> AURecord:
    line = _line_number(position)
    row = table.rows[position]
    filename = table.cell(row, name_column)
    if not filename:
        raise AnnotationError(f"{table.path}: row {line}, column {table.headers[name_column]}: empty file name")
    aus = _row_aus(table, line, row, au_columns)
    extras = {table.headers[i]: table.cell(row, i) for i in extra_columns}
    return AURecord(Path(filename.replace("\\", "/")).name, aus, extras)


def read_au_csv(path: str | os.PathLike[str], *, strict: bool = True) -> AUTable:
    """Read a combined CSV (one row per image, a file-name column, ``AU.._r`` columns).

    ``strict`` raises on the first bad row; otherwise bad rows are skipped and described in
    :attr:`AUTable.problems`, so that ``ganimation prepare`` can count them all at once.
    File names are reduced to their last path component, since images are looked up by name.
    """
    table = _read_table(Path(path))
    name_column = _filename_column(table)
    au_columns = _au_columns(table)
    extra_columns = _extra_columns(table, {name_column, *au_columns})
    result = AUTable(table.path, [])
    seen: set[str] = set()
    for position in range(len(table.rows)):
        try:
            record = _record(table, position, name_column, au_columns, extra_columns)
        except AnnotationError as error:
            if strict:
                raise
            result.problems.append(str(error))
            continue
        if record.filename in seen:
            result.problems.append(f"{table.path}: row {_line_number(position)}: duplicate entry for "
                                   f"{record.filename} (first one kept)")
            continue
        seen.add(record.filename)
        result.records.append(record)
    return result


def write_au_csv(path: str | os.PathLike[str],
                 rows: Iterable[tuple[str, Sequence[float] | np.ndarray, Mapping[str, Any] | None]]) -> Path:
    """Write the combined format atomically: ``filename,<extras...>,AU01_r,...,AU45_r`` on the 0-5 scale.

    ``rows`` are ``(filename, aus_in_model_units, extras)``; the extra column names are the
    union of all extras in first-seen order, so heterogenous rows still produce one table.
    """
    target = Path(path)
    materialised = [(str(name), np.asarray(aus, dtype=np.float64).reshape(-1), dict(extras or {}))
                    for name, aus, extras in rows]
    extra_names: list[str] = []
    for name, aus, extras in materialised:
        if aus.shape[0] != NUM_AUS:
            raise AnnotationError(f"{target}: {name}: expected {NUM_AUS} AU values, got {aus.shape[0]}")
        extra_names.extend(key for key in extras if key not in extra_names)
    with atomic_output(target) as temp:
        with open(temp, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(["filename", *extra_names, *OPENFACE_COLUMNS])
            for name, aus, extras in materialised:
                raw = [f"{float(value) * OPENFACE_SCALE:.4f}" for value in aus]
                writer.writerow([name, *(extras.get(key, "") for key in extra_names), *raw])
    return target


# --------------------------------------------------------------------------- safe pickles


_NUMPY_ALIASES = {"numpy.core.multiarray": "numpy._core.multiarray", "numpy.core.numeric": "numpy._core.numeric"}
_ALLOWED_GLOBALS: dict[str, frozenset[str]] = {
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
    "_codecs": frozenset({"encode"}),
    "builtins": frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray",
                           "float", "int", "bool", "complex"}),
    "collections": frozenset({"OrderedDict"}),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays and plain containers.

    A pickle can name any importable callable (``os.system``...) to run while loading; this
    refuses every global outside a short allow-list so that a downloaded ``aus_openface.pkl``
    cannot execute code.
    """

    def find_class(self, module: str, name: str) -> Any:
        canonical = {"__builtin__": "builtins"}.get(module, module)
        canonical = _NUMPY_ALIASES.get(canonical, canonical)
        if name not in _ALLOWED_GLOBALS.get(canonical, frozenset()):
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays and plain data allowed)")
        try:
            return getattr(importlib.import_module(canonical), name)
        except ImportError:  # numpy 1.x has no numpy._core
            return getattr(importlib.import_module(canonical.replace("numpy._core", "numpy.core")), name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_pickle_load(path: str | os.PathLike[str]) -> Any:
    """Load a pickle that may only contain numpy arrays, numbers, strings and containers.

    ``encoding="latin1"`` lets Python-2 pickles of numpy arrays (as in the reference
    GANimation release) load; it does not affect Python-3 pickles.
    """
    source = Path(path)
    if not source.is_file():
        raise AnnotationError(f"{source}: no such annotation file")
    try:
        with open(source, "rb") as stream:
            return _RestrictedUnpickler(stream, encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise AnnotationError(f"{source}: unsafe or invalid pickle ({error})") from None
    except (EOFError, OSError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise AnnotationError(f"{source}: corrupt pickle ({error.__class__.__name__}: {error})") from None


def _pickle_key(key: Any) -> str:
    return key.decode("latin1") if isinstance(key, bytes) else str(key)


def read_au_pickle(path: str | os.PathLike[str], *, strict: bool = True) -> AUTable:
    """Read the reference ``aus_openface.pkl``: dict of image id (stem) -> 17 raw intensities."""
    source = Path(path)
    data = safe_pickle_load(source)
    if not isinstance(data, Mapping):
        raise AnnotationError(f"{source}: expected a dict of image id -> AU array, got {type(data).__name__}")
    result = AUTable(source, [])
    for key, value in data.items():
        name = _pickle_key(key).strip()
        try:
            raw = np.asarray(value, dtype=np.float64)
            aus = raw_to_model(raw, source=f"{source}: id {name}")
        except (TypeError, ValueError) as error:
            message = str(error) if isinstance(error, AnnotationError) else f"{source}: id {name}: not numeric ({error})"
            if strict:
                raise AnnotationError(message) from None
            result.problems.append(message)
            continue
        result.records.append(AURecord(name, aus))
    return result


# --------------------------------------------------------------------------- id lists


def read_id_list(path: str | os.PathLike[str]) -> list[str]:
    """Ids (stems or file names) of a ``train_ids.csv``/``test_ids.csv``: one per line, header optional.

    Only the first comma-separated field counts and paths are reduced to their file name,
    so ``filename`` lists from the generator and bare-id lists from the reference repo both work.
    An empty file is an empty split, not an error.
    """
    source = Path(path)
    if not source.is_file():
        raise AnnotationError(f"{source}: no such id list")
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise AnnotationError(f"{source}: cannot read ({error.__class__.__name__}: {error})") from None
    firsts = [row[0].strip() for row in csv.reader(io.StringIO(text)) if row and row[0].strip()]
    ids = [Path(entry.replace("\\", "/")).name for entry in firsts]
    if ids and ids[0].lower() in _ID_LIST_HEADERS:
        ids = ids[1:]
    return ids


# --------------------------------------------------------------------------- video sequences


def _sequence_rows(table: _Table, *, drop_failed: bool) -> list[int]:
    """Row positions of the main face (most frequent ``face_id``) and, optionally, successful frames."""
    positions = list(range(len(table.rows)))
    face = table.column("face_id")
    if face is not None:
        counts = collections.Counter(table.cell(table.rows[p], face) for p in positions)
        if len(counts) > 1:
            main = counts.most_common(1)[0][0]
            logger.warning("%s: %d faces tracked, using face_id %s", table.path, len(counts), main)
            positions = [p for p in positions if table.cell(table.rows[p], face) == main]
    success = table.column("success")
    if drop_failed and success is not None:
        kept = [p for p in positions if table.cell(table.rows[p], success) not in ("0", "0.0")]
        if len(kept) < len(positions):
            logger.warning("%s: dropped %d frames where OpenFace lost the face", table.path, len(positions) - len(kept))
        positions = kept
    return positions


def read_openface_sequence(path: str | os.PathLike[str], *, drop_failed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame AUs of an OpenFace ``FeatureExtraction`` CSV, for driving an animation.

    Returns ``(frames, aus)``: ``frames`` are the ``frame`` numbers (int64) if the column
    exists, else ``timestamp`` seconds (float64), else ``0..N-1``; ``aus`` is float32
    ``(N, 17)`` in model units. Frames where OpenFace lost the face (``success == 0``) carry
    all-zero AUs, which would read as a sudden neutral face, so they are dropped by default;
    the returned frame numbers then show the gaps.
    """
    table = _read_table(Path(path))
    columns = _au_columns(table)
    positions = _sequence_rows(table, drop_failed=drop_failed)
    if not positions:
        raise AnnotationError(f"{table.path}: no usable frames (empty file or OpenFace never found a face)")
    aus = np.stack([_row_aus(table, _line_number(p), table.rows[p], columns) for p in positions])
    for name, dtype in (("frame", np.int64), ("timestamp", np.float64)):
        index = table.column(name)
        if index is not None:
            values = [_parse_number(table, _line_number(p), table.rows[p], index) for p in positions]
            return np.asarray(values, dtype=dtype), aus
    return np.arange(len(positions), dtype=np.int64), aus


# --------------------------------------------------------------------------- dataset layouts


@dataclass
class AnnotationSet:
    """All AU annotations found for a dataset, keyed by file name or stem, plus what went wrong.

    ``layout`` is ``"pickle"``, ``"combined-csv"`` or ``"per-image-csv"``; ``unmatched``
    lists annotation keys with no image (per-image layout: orphan CSV stems).
    """

    layout: str
    sources: list[Path]
    records: dict[str, AURecord]
    problems: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    @functools.cached_property
    def _by_stem(self) -> dict[str, str]:
        """Keys by stem, so ``0001`` matches ``0001.png`` and ``0001.png`` matches ``0001.jpg``."""
        index: dict[str, str] = {}
        for key in self.records:
            stem = Path(key).stem if Path(key).suffix.lower() in IMAGE_SUFFIXES else key
            index.setdefault(stem, key)
        return index

    def lookup(self, image: Path) -> str | None:
        """Key of the annotation for an image: exact file name first, then stem."""
        if image.name in self.records:
            return image.name
        return self._by_stem.get(image.stem)

    @property
    def has_identities(self) -> bool:
        return any(record.identity is not None for record in self.records.values())


def _from_table(layout: str, table: AUTable) -> AnnotationSet:
    return AnnotationSet(layout, [table.path], {r.filename: r for r in table.records}, list(table.problems))


def _combined_candidates(root: Path) -> list[Path]:
    """CSV files in ``root`` that could hold all annotations: known names first, then any other."""
    named = [root / name for name in COMBINED_CSV_NAMES if (root / name).is_file()]
    skip = {TRAIN_IDS_NAME, TEST_IDS_NAME, *COMBINED_CSV_NAMES}
    others = sorted(p for p in root.glob("*.csv") if p.name not in skip and not p.name.startswith("."))
    return named + others


def _read_header(path: Path) -> tuple[str, ...]:
    """Stripped header of a CSV, reading one line only (per-image OpenFace CSVs are many and wide)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            return tuple(cell.strip().lower() for cell in next(csv.reader(stream), []))
    except (OSError, UnicodeDecodeError, csv.Error):
        return ()


def _is_combined(path: Path, image_stems: set[str]) -> bool:
    """Whether a CSV in the dataset root is the combined annotation table.

    Known names (``aus.csv``...) count unless they are an image's own CSV, so that a broken
    ``aus.csv`` yields a precise error instead of "unknown layout"; other CSVs need a file-name
    column and the AU columns.
    """
    if path.stem in image_stems:
        return False
    if path.name in COMBINED_CSV_NAMES:
        return True
    header = set(_read_header(path))
    return bool(header & set(FILENAME_COLUMNS)) and all(name.lower() in header for name in OPENFACE_COLUMNS)


def _per_image_csv(image: Path, search_dirs: Sequence[Path]) -> Path | None:
    for folder in search_dirs:
        candidate = folder / f"{image.stem}.csv"
        if candidate.is_file():
            return candidate
    return None


def _csv_dirs(root: Path, image_dir: Path) -> list[Path]:
    dirs: list[Path] = []
    for base in (image_dir, root):
        for name in PER_IMAGE_CSV_DIRS:
            folder = (base / name).resolve()
            if folder.is_dir() and folder not in dirs:
                dirs.append(folder)
    return dirs


def _orphan_csvs(sources: Sequence[Path], images: Sequence[Path]) -> list[str]:
    """Stems of CSVs in the per-image annotation folders that belong to no image."""
    used = {path.resolve() for path in sources}
    stems = {image.stem for image in images}
    orphans = []
    for folder in sorted({path.parent.resolve() for path in sources}):
        for candidate in sorted(folder.glob("*.csv")):
            if candidate.resolve() not in used and candidate.stem not in stems \
                    and candidate.name not in (TRAIN_IDS_NAME, TEST_IDS_NAME):
                orphans.append(candidate.stem)
    return orphans


def _load_per_image(root: Path, images: Sequence[Path], strict: bool) -> AnnotationSet | None:
    dirs = _csv_dirs(root, images[0].parent if images else root)
    found = {image: _per_image_csv(image, dirs) for image in images}
    sources = [path for path in found.values() if path is not None]
    if not sources:
        return None
    records: dict[str, AURecord] = {}
    problems: list[str] = []
    for image, csv_path in found.items():
        if csv_path is None:
            continue
        try:
            records[image.name] = AURecord(image.name, read_openface_csv(csv_path))
        except AnnotationError as error:
            if strict:
                raise
            problems.append(str(error))
    return AnnotationSet("per-image-csv", sources, records, problems, _orphan_csvs(sources, images))


def load_annotations(root: str | os.PathLike[str], images: Sequence[Path], *, strict: bool = False) -> AnnotationSet:
    """Find and read the AU annotations of a dataset folder, whatever its layout.

    Precedence: ``aus_openface.pkl`` (reference GANimation), then a combined CSV, then one
    OpenFace CSV per image. ``strict=False`` collects bad rows in ``problems`` instead of
    failing, so that a few broken rows do not hide the rest of a dataset report.
    Raises :class:`AnnotationError` when no layout is recognised.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise AnnotationError(f"{folder}: no such dataset folder")
    result = _detect(folder, images, strict)
    if result is None:
        raise AnnotationError(f"{folder}: unknown layout: no {PICKLE_NAME}, no combined CSV with a file-name column "
                              f"(e.g. aus.csv) and no per-image OpenFace CSVs next to the images")
    keys = {result.lookup(image) for image in images}
    if result.layout != "per-image-csv":
        result.unmatched = [key for key in result.records if key not in keys]
    logger.info("%s: %s layout, %d annotations from %s", folder, result.layout, len(result.records),
                result.sources[0] if len(result.sources) == 1 else f"{len(result.sources)} files")
    return result


def _detect(folder: Path, images: Sequence[Path], strict: bool) -> AnnotationSet | None:
    for pickle_path in (folder / PICKLE_NAME, *(folder / d / PICKLE_NAME for d in ("imgs", "images"))):
        if pickle_path.is_file():
            return _from_table("pickle", read_au_pickle(pickle_path, strict=strict))
    stems = {image.stem for image in images}
    for candidate in _combined_candidates(folder):
        if _is_combined(candidate, stems):
            return _from_table("combined-csv", read_au_csv(candidate, strict=strict))
    return _load_per_image(folder, images, strict)
