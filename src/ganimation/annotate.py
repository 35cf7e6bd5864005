"""``ganimation annotate``: photos, folders and videos in, a training set out, no OpenFace needed.

Every face big enough is found with the landmark model (:mod:`ganimation.facemesh`), cropped in
the project's crop convention (:func:`ganimation.faces.align_face`, the same crop inference
edits) and read with the AU reader (:mod:`ganimation.aureader`). The output folder is what
``ganimation prepare`` and ``train`` read::

    OUT/images/<name>.png    aligned face crops
    OUT/aus.csv              filename (in images/), identity, source, AU01_r ... AU45_r (OpenFace's 0-5 scale)
    OUT/annotate.jsonl       the journal: one line per input photo or video frame

The journal makes the command resumable: a photo or frame already in it is not read again, so
re-running after an interruption (or with more inputs) only does the new work. ``aus.csv`` is
rewritten atomically from the journal at the end of each run.

The ``identity`` column keeps a person out of both sides of a train/test split: a video's frames
share the video's name, photos in a sub-folder of an input folder share the sub-folder's name
(CelebA-style ``celeb_K/``), and any other photo is its own identity.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import multiprocessing
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ganimation.aureader import read_aus
from ganimation.facemesh import check_installed
from ganimation.faces import MIN_FACE_SIZE, LandmarkFaceDetector, align_face
from ganimation.files import ImageReadError, load_image, save_image
from ganimation.openface import IMAGE_SUFFIXES, write_au_csv
from ganimation.video import VIDEO_SUFFIXES, read_video

logger = logging.getLogger(__name__)

JOURNAL = "annotate.jsonl"
CSV_NAME = "aus.csv"
IMAGES = "images"
#: What can happen to one input photo or frame.
OUTCOMES = ("ok", "no face", "too small", "unreadable")


class AnnotateError(ValueError):
    """Inputs that cannot be annotated at all (none given, none found, a bad option)."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One photo, or one frame of a video, to annotate."""

    key: str  #: unique, stable name: relative path, plus ``#frame`` for a video frame
    identity: str
    path: Path
    frame: int | None = None

    @property
    def stem(self) -> str:
        """File-name-safe version of the key, the crops' name prefix."""
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", self.key.replace("/", "__").replace("#", "_f"))
        return base.rsplit(".", 1)[0] if self.frame is None else base.replace(".", "_")


def source_group(source: str) -> str:
    """The group of a crop from its ``source`` column: a video frame's source is ``VIDEO#FRAME``
    (:attr:`Item.key`) and its group the video; a photo's group is its folder (a person's photos)."""
    return source.split("#")[0] if "#" in source else str(Path(source).parent)


def crop_sources(aus_csv: str | os.PathLike[str]) -> dict[str, str]:
    """``filename -> source`` of every crop listed in an annotated folder's ``aus.csv``."""
    with open(aus_csv, newline="") as handle:
        return {row["filename"]: row["source"] for row in csv.DictReader(handle)}


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def collect_inputs(inputs: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """Photos and videos named by ``inputs`` (folders searched recursively, sorted), with the
    identity of each photo, and the inputs of unknown kind."""
    photos: list[tuple[Path, str]] = []
    videos: list[Path] = []
    unknown: list[Path] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                relative = child.relative_to(path)
                if _is_image(child):
                    identity = relative.parts[0] if len(relative.parts) > 1 else child.stem
                    photos.append((child, identity))
                elif _is_video(child):
                    videos.append(child)
        elif path.is_file() and _is_image(path):
            photos.append((path, path.stem))
        elif path.is_file() and _is_video(path):
            videos.append(path)
        elif not path.exists():
            raise AnnotateError(f"{path}: no such file or folder")
        else:
            unknown.append(path)
    return unknown, videos, photos


def _key(path: Path) -> str:
    """A stable key for a file: its path relative to the working folder when inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


# --------------------------------------------------------------------------------------------
# Work done in the worker processes
# --------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(size: int, min_face: float, images: str) -> None:
    _WORKER.update(detector=LandmarkFaceDetector(min_face=min_face), size=size, min_face=min_face, images=Path(images))


def annotate_image(rgb: np.ndarray, item: Item, detector: LandmarkFaceDetector, size: int, min_face: float,
                   images: Path) -> dict[str, Any]:
    """Find, crop, save and read every face big enough in one photo or frame: a journal record."""
    faces = detector.detect(rgb)
    big = [face for face in faces if face.size >= min_face]
    record: dict[str, Any] = {"key": item.key, "identity": item.identity, "faces": []}
    if not faces:
        record["outcome"] = "no face"
        return record
    if not big:
        record["outcome"] = "too small"
        return record
    for number, face in enumerate(big):
        aligned = align_face(rgb, face, size)
        name = f"{item.stem}_{number}.png"
        save_image(images / name, aligned.crop)
        record["faces"].append({"filename": name, "aus": [round(float(v), 5) for v in read_aus(face.mesh)],
                                "box": [round(float(v), 1) for v in face.box]})
    record["outcome"] = "ok"
    return record


def _work(task: tuple[Item, np.ndarray | None]) -> dict[str, Any]:
    item, rgb = task
    if rgb is None:
        try:
            rgb = load_image(item.path)
        except (ImageReadError, OSError) as error:
            return {"key": item.key, "identity": item.identity, "faces": [], "outcome": "unreadable",
                    "error": str(error).splitlines()[0] if str(error) else type(error).__name__}
    return annotate_image(rgb, item, _WORKER["detector"], _WORKER["size"], _WORKER["min_face"], _WORKER["images"])


# --------------------------------------------------------------------------------------------
# The journal and the command
# --------------------------------------------------------------------------------------------


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Finished records by key; a line cut short by an interruption is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "key" in record and record.get("outcome") in OUTCOMES:
                records[record["key"]] = record
    return records


@dataclasses.dataclass
class AnnotateReport:
    """What a run did: outcomes of this run's inputs and the data set's totals."""

    output: Path
    counts: Counter[str]
    reused: int
    faces: int
    unknown: list[Path]

    def lines(self) -> list[str]:
        done = sum(self.counts.values())
        parts = [f"{self.counts[outcome]} {outcome}" for outcome in OUTCOMES if self.counts[outcome]]
        lines = [f"{done} photos/frames read ({', '.join(parts) or 'nothing new'}), {self.reused} already done",
                 f"data set: {self.faces} face crops in {self.output / IMAGES}, labels in {self.output / CSV_NAME}"]
        if self.unknown:
            lines.append(f"skipped {len(self.unknown)} input(s) that are neither photos nor videos: "
                         + ", ".join(str(p) for p in self.unknown[:5]))
        return lines


def _tasks(photos: Sequence[tuple[Path, str]], videos: Sequence[Path], every: int, done: dict[str, Any],
           counter: Counter[str]) -> Iterator[tuple[Item, np.ndarray | None]]:
    for path, identity in photos:
        item = Item(_key(path), identity, path)
        if item.key in done:
            counter["reused"] += 1
            continue
        yield item, None
    for path in videos:
        try:
            frames, _, _ = read_video(path)
        except ValueError as error:
            logger.warning("%s", error)
            counter["unreadable videos"] += 1
            continue
        for index, frame in enumerate(frames):
            if index % every:
                continue
            item = Item(f"{_key(path)}#{index:06d}", path.stem, path, index)
            if item.key in done:
                counter["reused"] += 1
                continue
            yield item, frame


def annotate(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *, size: int = 128,
             every: int = 10, min_face: float = MIN_FACE_SIZE, workers: int = 0, progress: bool = True) -> AnnotateReport:
    """Annotate ``inputs`` (photos, folders, videos) into the data set folder ``output``.

    ``every``: a video's every N-th frame; ``workers``: processes (0: one per usable core).
    """
    from tqdm import tqdm

    if size < 8:
        raise AnnotateError(f"--size must be at least 8 px, got {size}")
    if every < 1:
        raise AnnotateError(f"--every must be at least 1, got {every}")
    if min_face <= 0:
        raise AnnotateError(f"--min-face must be positive, got {min_face}")
    unknown, videos, photos = collect_inputs(inputs)
    if not photos and not videos:
        raise AnnotateError("no photos or videos found in " + ", ".join(str(p) for p in inputs))
    check_installed()  # fail here, in one line, when the face model is missing, not in every worker
    root = Path(output)
    if root.exists() and not root.is_dir():
        raise AnnotateError(f"{root}: is a file: give a folder for the data set")
    created = not root.exists()
    images = root / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    journal_path = root / JOURNAL
    done = read_journal(journal_path)
    counts: Counter[str] = Counter()
    tasks = _tasks(photos, videos, every, done, counts)
    workers = workers or _usable_cores()
    with open(journal_path, "a", encoding="utf-8") as journal:
        if journal.tell() and not _ends_with_newline(journal_path):
            journal.write("\n")  # close a line an interruption cut short, so the next record stands alone
        results: Iterable[dict[str, Any]]
        if workers == 1:
            _init_worker(size, min_face, str(images))
            results = map(_work, tasks)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (size, min_face, str(images)))
            results = pool.imap(_work, tasks, chunksize=4)
        try:
            for record in tqdm(results, desc="annotate", unit="img", disable=not progress):
                counts[record["outcome"]] += 1
                if record["outcome"] == "unreadable":
                    logger.warning("skipping %s: %s", record["key"], record.get("error", "unreadable"))
                journal.write(json.dumps(record) + "\n")
                journal.flush()
                done[record["key"]] = record
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    if not any(record.get("faces") for record in done.values()):
        if created:
            shutil.rmtree(root, ignore_errors=True)  # a folder this run made holds nothing worth keeping
        seen = {outcome: counts[outcome] for outcome in OUTCOMES}
        seen["unreadable"] += counts["unreadable videos"]
        raise AnnotateError("no face found in the inputs ("
                            + ", ".join(f"{number} {outcome}" for outcome, number in seen.items() if number)
                            + "): no data set written")
    faces = write_labels(root, done)
    report = AnnotateReport(root, Counter({k: counts[k] for k in OUTCOMES}), counts["reused"], faces, unknown)
    if counts["unreadable videos"]:
        report.counts["unreadable"] += counts["unreadable videos"]
    return report


def write_labels(root: Path, records: dict[str, dict[str, Any]]) -> int:
    """Rewrite ``aus.csv`` (atomically) from the journal's records; the number of faces."""
    rows = []
    for key in sorted(records):
        record = records[key]
        for face in record.get("faces", []):
            if (root / IMAGES / face["filename"]).exists():
                rows.append((face["filename"], np.asarray(face["aus"], dtype=np.float64),
                             {"identity": record["identity"], "source": key}))
    write_au_csv(root / CSV_NAME, rows)
    return len(rows)


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as stream:
        stream.seek(-1, os.SEEK_END)
        return stream.read(1) == b"\n"


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)

