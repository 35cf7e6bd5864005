"""Dataset discovery, validation and the torch :class:`FaceDataset` for training GANimation.

A dataset is a folder of face crops (in ``images/``, ``imgs/`` or the folder itself) plus AU
annotations in any layout :mod:`ganimation.openface` reads. :func:`discover_dataset` pairs
images with AUs and splits them into train/test; :func:`validate_dataset` does the same
while checking every image, and returns a :class:`PrepareReport` for ``ganimation prepare``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .aus import AU_NAMES, OPENFACE_SCALE, check_au_vector
from .files import ImageReadError, load_image
from .openface import (
    IMAGE_SUFFIXES,
    TEST_IDS_NAME,
    TRAIN_IDS_NAME,
    AnnotationError,
    AnnotationSet,
    load_annotations,
    read_id_list,
)

logger = logging.getLogger(__name__)

#: Sub-folders holding the images, tried in order before the dataset root itself.
IMAGE_DIR_NAMES: tuple[str, ...] = ("images", "imgs")
DEFAULT_TEST_FRACTION = 0.1
DEFAULT_SPLIT_SEED = 0
#: How many example names a report lists per kind of problem (counts are always complete).
MAX_LISTED = 10
#: Below this many samples, all-small AU values are plausible and not flagged as a scale mistake.
SCALE_CHECK_MIN_SAMPLES = 20


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, eq=False)
class Sample:
    """One training example: an image file and its AUs (float32 ``(17,)`` in [0, 1])."""

    image_path: Path
    aus: np.ndarray
    identity: str | None = None


@dataclass
class Finding:
    """A count of one kind of problem with the first few examples (names or messages)."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str, limit: int = MAX_LISTED) -> None:
        self.count += 1
        if len(self.examples) < limit:
            self.examples.append(example)

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "examples": list(self.examples)}


@dataclass
class PrepareReport:
    """What a dataset folder holds and what is wrong with it, for users to fix their data."""

    root: Path
    image_dir: Path | None = None
    layout: str | None = None
    sources: list[str] = field(default_factory=list)
    num_images: int = 0
    usable: int = 0
    images_without_aus: Finding = field(default_factory=Finding)
    aus_without_images: Finding = field(default_factory=Finding)
    unreadable_images: Finding = field(default_factory=Finding)
    invalid_annotations: Finding = field(default_factory=Finding)
    images_checked: bool = False
    image_sizes: dict[str, int] = field(default_factory=dict)
    au_mean: dict[str, float] = field(default_factory=dict)
    au_max: dict[str, float] = field(default_factory=dict)
    split_method: str = ""
    train_size: int = 0
    test_size: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when training can start: at least one usable sample and no fatal error."""
        return self.error is None and self.usable > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (paths as strings)."""
        findings = ("images_without_aus", "aus_without_images", "unreadable_images", "invalid_annotations")
        result: dict[str, Any] = {
            "root": str(self.root), "image_dir": str(self.image_dir) if self.image_dir else None,
            "layout": self.layout, "sources": list(self.sources), "num_images": self.num_images,
            "usable": self.usable, "ok": self.ok, "images_checked": self.images_checked,
            "image_sizes": dict(self.image_sizes), "au_mean": dict(self.au_mean), "au_max": dict(self.au_max),
            "split_method": self.split_method, "train_size": self.train_size, "test_size": self.test_size,
            "warnings": list(self.warnings), "error": self.error,
        }
        result.update({name: getattr(self, name).to_dict() for name in findings})
        return result

    def summary(self) -> str:
        """Multi-line human-readable report, problems first-class so users see what to fix."""
        lines = [f"Dataset: {self.root}"]
        if self.error:
            lines.append(f"ERROR: {self.error}")
        lines += self._overview_lines() + self._problem_lines() + self._stats_lines()
        lines += [f"warning: {text}" for text in self.warnings]
        lines.append("Status: OK, ready to train" if self.ok else "Status: NOT USABLE, no training samples")
        return "\n".join(lines)

    def _findings(self) -> tuple[tuple[str, Finding], ...]:
        return (("images without AUs", self.images_without_aus), ("AUs without images", self.aus_without_images),
                ("unreadable images", self.unreadable_images), ("invalid AU rows", self.invalid_annotations))

    def problem_summary(self) -> list[str]:
        """One line per kind of problem found (left out of training) and per warning, for logs."""
        lines = [f"{finding.count} {label} left out (e.g. {'; '.join(finding.examples[:3])})"
                 for label, finding in self._findings() if finding.count]
        return lines + list(self.warnings)

    def _overview_lines(self) -> list[str]:
        sources = ", ".join(self.sources[:3]) + (f" (+{len(self.sources) - 3} more)" if len(self.sources) > 3 else "")
        return [
            f"  images folder:        {self.image_dir if self.image_dir else '-'}",
            f"  annotation layout:    {self.layout or '-'}" + (f" ({sources})" if sources else ""),
            f"  images found:         {self.num_images}",
            f"  usable samples:       {self.usable} (train {self.train_size}, test {self.test_size}; "
            f"split: {self.split_method or '-'})",
        ]

    def _problem_lines(self) -> list[str]:
        lines = []
        for label, finding in self._findings():
            if label == "unreadable images" and not self.images_checked:
                lines.append(f"  {label + ':':<22}not checked")
                continue
            lines.append(f"  {label + ':':<22}{finding.count}")
            lines += [f"      - {example}" for example in finding.examples]
            if finding.count > len(finding.examples):
                lines.append(f"      ... and {finding.count - len(finding.examples)} more")
        return lines

    def _stats_lines(self) -> list[str]:
        lines = []
        if self.image_sizes:
            sizes = sorted(self.image_sizes.items(), key=lambda item: -item[1])
            shown = ", ".join(f"{size} x{count}" for size, count in sizes[:8])
            lines.append(f"  image sizes:          {shown}" + (", ..." if len(sizes) > 8 else ""))
        if self.au_mean:
            lines.append("  AU intensity (model units 0-1):  mean / max")
            lines += [f"      {name}  {self.au_mean[name]:.3f} / {self.au_max[name]:.3f}" for name in AU_NAMES]
        return lines


@dataclass
class DatasetIndex:
    """Train and test samples of a dataset and the report of how they were found."""

    train: list[Sample]
    test: list[Sample]
    report: PrepareReport


# --------------------------------------------------------------------------- discovery


def find_image_dir(root: Path) -> Path:
    """``images/`` or ``imgs/`` (reference GANimation) if present, else the root itself."""
    for name in IMAGE_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    return root


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (not recursive: OpenFace's ``processed/`` holds other crops)."""
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."))


def inspect_image(path: Path) -> tuple[int, int]:
    """Size ``(width, height)`` of an image after verifying and fully decoding it.

    ``verify()`` catches corrupt PNG chunks, the full ``load()`` catches truncated JPEGs;
    both are cheap next to discovering the problem mid-training.
    """
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
            return image.size
    except Image.DecompressionBombError as error:
        raise ImageReadError(f"{path}: image too large ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(f"{path}: unreadable image ({error.__class__.__name__}: {error})") from None


def _match_samples(images: Sequence[Path], annotations: AnnotationSet, report: PrepareReport,
                   check_images: bool, max_listed: int) -> list[Sample]:
    sizes: Counter[str] = Counter()
    samples = []
    for image in images:
        key = annotations.lookup(image)
        if check_images:
            try:
                width, height = inspect_image(image)
                sizes[f"{width}x{height}"] += 1
            except ImageReadError as error:
                report.unreadable_images.add(f"{image.name}: {error}".replace(f"{image}: ", ""), max_listed)
                continue
        if key is None:
            report.images_without_aus.add(image.name, max_listed)
            continue
        record = annotations.records[key]
        aus = check_au_vector(record.aus, source=str(image))
        aus.setflags(write=False)
        samples.append(Sample(image, aus, record.identity))
    report.image_sizes = dict(sizes)
    return samples


def _au_statistics(samples: Sequence[Sample], report: PrepareReport) -> None:
    if not samples:
        return
    stacked = np.stack([sample.aus for sample in samples]).astype(np.float64)
    report.au_mean = {name: round(float(value), 4) for name, value in zip(AU_NAMES, stacked.mean(axis=0))}
    report.au_max = {name: round(float(value), 4) for name, value in zip(AU_NAMES, stacked.max(axis=0))}
    if len(samples) >= SCALE_CHECK_MIN_SAMPLES and stacked.max() <= 1.0 / OPENFACE_SCALE + 1e-6:
        report.warnings.append(f"no AU exceeds 1 on the 0-{OPENFACE_SCALE:g} scale in {len(samples)} samples: "
                               f"were the values already divided by {OPENFACE_SCALE:g}? AU columns must hold raw "
                               f"OpenFace intensities")


def _build_index(root: Path, *, test_fraction: float, seed: int, check_images: bool,
                 max_listed: int, report: PrepareReport) -> DatasetIndex:
    if not root.is_dir():
        raise AnnotationError(f"{root}: no such dataset folder")
    report.image_dir = find_image_dir(root)
    images = list_images(report.image_dir)
    report.num_images = len(images)
    annotations = load_annotations(root, images, strict=False)
    report.layout = annotations.layout
    report.sources = [str(path) for path in annotations.sources]
    for problem in annotations.problems:
        report.invalid_annotations.add(problem, max_listed)
    for key in annotations.unmatched:
        report.aus_without_images.add(key, max_listed)
    report.images_checked = check_images
    samples = _match_samples(images, annotations, report, check_images, max_listed)
    train, test = split_samples(samples, root, annotations.has_identities, test_fraction=test_fraction,
                                seed=seed, report=report)
    report.usable, report.train_size, report.test_size = len(train) + len(test), len(train), len(test)
    _au_statistics(train + test, report)
    return DatasetIndex(train, test, report)


def discover_dataset(root: str | os.PathLike[str], *, test_fraction: float = DEFAULT_TEST_FRACTION,
                     seed: int = DEFAULT_SPLIT_SEED, check_images: bool = False,
                     max_listed: int = MAX_LISTED) -> DatasetIndex:
    """Pair a dataset folder's images with their AUs and split them into train/test.

    Raises :class:`AnnotationError` when the folder or its annotation layout is unusable or
    no image has AUs; partial problems (a few bad rows or orphan images) only go to the report,
    so that one broken row does not block training on thousands of good ones.
    """
    folder = Path(root)
    report = PrepareReport(folder)
    index = _build_index(folder, test_fraction=test_fraction, seed=seed, check_images=check_images,
                         max_listed=max_listed, report=report)
    if not report.ok:
        raise AnnotationError(f"{folder}: no usable samples ({report.num_images} images, "
                              f"{report.images_without_aus.count} without AUs, "
                              f"{report.invalid_annotations.count} invalid AU rows); run `ganimation prepare` for details")
    logger.info("%s: %d train / %d test samples (%s)", folder, report.train_size, report.test_size, report.split_method)
    for line in report.problem_summary():
        logger.warning("%s: %s", folder, line)
    return index


def validate_dataset(root: str | os.PathLike[str], check_images: bool = True, *,
                     test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = DEFAULT_SPLIT_SEED,
                     max_listed: int = MAX_LISTED) -> PrepareReport:
    """Check a dataset folder and describe it; never raises for problems in the data.

    A fatal problem (no folder, unrecognised layout) is recorded in ``report.error``, so the
    ``prepare`` command can always print a full summary.
    """
    report = PrepareReport(Path(root))
    try:
        _build_index(Path(root), test_fraction=test_fraction, seed=seed, check_images=check_images,
                     max_listed=max_listed, report=report)
    except AnnotationError as error:
        report.error = str(error)
    return report


# --------------------------------------------------------------------------- splits


def _hash_fraction(key: str, seed: int) -> float:
    """Stable pseudo-random number in [0, 1) per key (Python's ``hash`` changes per process)."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _hash_split(samples: Sequence[Sample], by_identity: bool, test_fraction: float,
                seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split by hashed group (identity or file name), keeping both sides non-empty when possible."""
    def group(sample: Sample) -> str:
        return sample.identity if by_identity and sample.identity is not None else f"file:{sample.image_path.name}"

    scores = {key: _hash_fraction(key, seed) for key in sorted({group(s) for s in samples})}
    test_groups = {key for key, score in scores.items() if score < test_fraction}
    if len(scores) >= 2 and 0 < test_fraction < 1:
        ranked = sorted(scores, key=scores.__getitem__)
        if not test_groups:
            test_groups = {ranked[0]}
        elif len(test_groups) == len(scores):
            test_groups.discard(ranked[-1])
    train = [s for s in samples if group(s) not in test_groups]
    test = [s for s in samples if group(s) in test_groups]
    return train, test


def _sample_by_id(samples: Sequence[Sample]) -> dict[str, Sample]:
    """Samples by file name and by stem, as ids in split lists may be either."""
    index: dict[str, Sample] = {}
    for sample in samples:
        index.setdefault(sample.image_path.name, sample)
        index.setdefault(sample.image_path.stem, sample)
    return index


def _resolve_ids(path: Path, by_id: dict[str, Sample], report: PrepareReport | None) -> list[Sample]:
    chosen: list[Sample] = []
    missing = 0
    for name in read_id_list(path):
        sample = by_id.get(name)
        if sample is None and Path(name).suffix.lower() in IMAGE_SUFFIXES:
            sample = by_id.get(Path(name).stem)
        if sample is None:
            missing += 1
        elif sample not in chosen:
            chosen.append(sample)
    if missing and report is not None:
        report.warnings.append(f"{path.name}: {missing} ids match no usable sample")
    return chosen


def _list_split(samples: Sequence[Sample], root: Path,
                report: PrepareReport | None) -> tuple[list[Sample], list[Sample]]:
    """Split by ``train_ids.csv``/``test_ids.csv``; a missing list is the complement of the other."""
    by_id = _sample_by_id(samples)
    train_path, test_path = root / TRAIN_IDS_NAME, root / TEST_IDS_NAME
    train = _resolve_ids(train_path, by_id, report) if train_path.is_file() else None
    test = _resolve_ids(test_path, by_id, report) if test_path.is_file() else None
    test_set = set(test) if test is not None else set()
    if test is None:
        train_set = set(train or [])
        test = [s for s in samples if s not in train_set]
    overlap = [s for s in (train or []) if s in test_set]
    if overlap and report is not None:
        report.warnings.append(f"{len(overlap)} samples listed in both {TRAIN_IDS_NAME} and {TEST_IDS_NAME}: "
                               f"kept in test only")
    test_set = set(test)
    train = [s for s in (train if train is not None else samples) if s not in test_set]
    unused = len(samples) - len(train) - len(test)
    if unused and report is not None:
        report.warnings.append(f"{unused} annotated images are in neither split list and are not used")
    order = {sample: position for position, sample in enumerate(samples)}
    return sorted(train, key=order.__getitem__), sorted(test, key=order.__getitem__)


def split_samples(samples: Sequence[Sample], root: Path, by_identity: bool, *,
                  test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = DEFAULT_SPLIT_SEED,
                  report: PrepareReport | None = None) -> tuple[list[Sample], list[Sample]]:
    """Train/test split: the dataset's id lists when present, else a seeded hash.

    The hash is over the identity when known, so no person appears in both splits and test
    scores measure generalisation to new faces; otherwise over the file name.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be within [0, 1], got {test_fraction}")
    if (root / TRAIN_IDS_NAME).is_file() or (root / TEST_IDS_NAME).is_file():
        method = "id lists"
        train, test = _list_split(samples, root, report)
    else:
        method = f"hash of {'identity' if by_identity else 'file name'} (test {test_fraction:.0%}, seed {seed})"
        train, test = _hash_split(samples, by_identity, test_fraction, seed)
    if report is not None:
        report.split_method = method
    return train, test


# --------------------------------------------------------------------------- tensors


def center_crop_square(pixels: np.ndarray) -> np.ndarray:
    """Central square of an ``(H, W, C)`` array, so resizing never distorts face proportions."""
    height, width = pixels.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return pixels[top:top + side, left:left + side]


def resize_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Center-crop to square and resize to ``size`` x ``size`` with Lanczos (uint8 in and out)."""
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    square = center_crop_square(pixels)
    if square.shape[0] == size:
        return np.ascontiguousarray(square)
    resized = Image.fromarray(square).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def _check_rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    array = np.asarray(pixels)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB array, got {array.dtype} {array.shape}")
    return array


def image_to_tensor(pixels: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` RGB -> float32 ``(3, S, S)`` in [-1, 1], the generator's input range.

    With ``size`` the image is center-cropped to square and resized first; without it the
    image keeps its shape.
    """
    array = _check_rgb_uint8(pixels)
    if size is not None:
        array = resize_square(array, size)
    # A copy: Pillow-backed arrays are read-only, which torch.from_numpy warns about.
    tensor = torch.from_numpy(np.array(array, dtype=np.uint8, order="C")).permute(2, 0, 1).to(torch.float32)
    return tensor / 127.5 - 1.0


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """float ``(3, H, W)`` (or ``(1, 3, H, W)``) in [-1, 1] -> uint8 ``(H, W, 3)``, clamping overshoot."""
    values = tensor.detach().to("cpu", torch.float32)
    if values.ndim == 4 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 3 or values.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(tensor.shape)}")
    scaled = ((values.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return scaled.permute(1, 2, 0).contiguous().numpy()


# --------------------------------------------------------------------------- torch dataset


class FaceDataset(Dataset):
    """Face crops with their AUs: ``{"image": (3, S, S) in [-1, 1], "aus": (17,), "index": int}``.

    Flips use torch's global RNG so that ``torch.manual_seed`` and DataLoader worker seeding
    make augmentation reproducible. AUs are unchanged by a flip: OpenFace AUs have no side.
    With ``cache=True`` resized pixels are kept in memory (per worker process), which pays off
    for small crops read every epoch.

    With ``pair_by_identity=True`` each item also holds ``"partner_image"`` and ``"partner_aus"``:
    another image of the same identity, drawn at random (the same torch RNG), for the paired
    losses (``loss.lambda_paired``, ``_colour`` and ``_attention``). Identities with a single
    image are their own partner.
    """

    def __init__(self, samples: Iterable[Sample], image_size: int, flip: bool = True, cache: bool = False,
                 pair_by_identity: bool = False) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.samples: list[Sample] = list(samples)
        self.image_size = int(image_size)
        self.flip = flip
        self.cache = cache
        self._pixels: dict[int, np.ndarray] = {}
        self._same_identity: dict[str, list[int]] | None = None
        if pair_by_identity:
            self._same_identity = identity_groups(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def pixels(self, index: int) -> np.ndarray:
        """Resized uint8 ``(S, S, 3)`` pixels of a sample, from the cache when enabled."""
        cached = self._pixels.get(index)
        if cached is not None:
            return cached
        sample = self.samples[index]
        try:
            pixels = resize_square(load_image(sample.image_path), self.image_size)
        except ImageReadError as error:
            raise ImageReadError(f"dataset sample {index}: {error}") from None
        if self.cache:
            self._pixels[index] = pixels
        return pixels

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = range(len(self.samples))[index]
        flip = self.flip and torch.rand(()).item() < 0.5
        item = {"image": self._image(index, flip), "aus": self._aus(index), "index": index}
        if self._same_identity is not None:
            partner = self.partner_of(index)
            # Flipped with the image, or the pair would no longer be pixel-aligned.
            item["partner_image"] = self._image(partner, flip)
            item["partner_aus"] = self._aus(partner)
        return item

    def _image(self, index: int, flip: bool) -> torch.Tensor:
        image = image_to_tensor(self.pixels(index))
        return image.flip(-1) if flip else image

    def _aus(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.samples[index].aus, dtype=np.float32))

    def partner_of(self, index: int) -> int:
        """A random other sample of the same identity (itself when it is the identity's only one)."""
        assert self._same_identity is not None, "partner_of needs pair_by_identity=True"
        group = self._same_identity[str(self.samples[index].identity)]
        if len(group) == 1:
            return index
        # Draw among the others: position p of the group minus `index`, without building that list.
        position = int(torch.randint(len(group) - 1, ()).item())
        partner = group[position]
        return group[-1] if partner == index else partner


def identity_groups(samples: Sequence[Sample]) -> dict[str, list[int]]:
    """Sample indices per identity; a one-line error when the samples do not name identities."""
    groups: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        if sample.identity is None:
            raise ValueError(f"{sample.image_path.name}: no identity; pairing images needs an "
                             f"'identity' column in the AU CSV (as `ganimation synth` writes)")
        groups.setdefault(sample.identity, []).append(index)
    if all(len(group) == 1 for group in groups.values()):
        raise ValueError(f"every one of the {len(groups)} identities has a single image; pairing needs "
                         f"several images (expressions) of the same identity")
    return groups
