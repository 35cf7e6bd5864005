"""Ground-truth benchmark on synthetic identities (``ganimation evaluate``).

No photo of a person with exactly the target expression exists, but the procedural face world of
:mod:`ganimation.synth` can render one: for held-out identities we edit a source render towards a
fixed suite of target AUs and compare with the renderer's image of the same identity at those AUs.

Metrics per edit: PSNR and SSIM against the ground truth (whole image and face region), AU error
measured by an independent regressor (:mod:`ganimation.auregressor`, trained on renders only,
never on GAN output), and the change outside the face; apart from the suite, the PSNR of each
source edited towards the AUs it already has (a model should hand it back unchanged). Methods
compared in the same run: the copy-the-input baseline, any number of models (e.g. a no-attention
ablation and the model under test).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ganimation.aus import AU_NAMES, NUM_AUS, aus_from_mapping
from ganimation.files import save_image, write_text_atomic
from ganimation.metrics import mean_abs_change, psnr, squared_error_split, ssim

logger = logging.getLogger(__name__)

SINGLE_AU_LEVELS = (0.33, 0.66, 1.0)
#: An AU counts as asked to change when its target differs from the source by more than this.
CHANGE_THRESHOLD = 0.05
PSNR_CAP = 60.0  # identical images would give inf; cap so means stay finite


def au_errors(predicted: np.ndarray, target: np.ndarray, source: np.ndarray) -> tuple[float, float]:
    """(error on the AUs the edit asks to change, error on all 17), mean absolute, AU units.

    Targets are sparse, so the mean over all 17 AUs is dominated by AUs that stay at zero, which
    copying the input satisfies for free: it mostly measures spurious changes. Whether the edit
    expresses what was asked is the error on the AUs whose target differs from the source.
    """
    absolute = np.abs(np.asarray(predicted, dtype=np.float64) - target)
    changed = np.abs(target - source) > CHANGE_THRESHOLD
    return float(absolute[changed].mean()) if changed.any() else float(absolute.mean()), float(absolute.mean())


@dataclass(frozen=True)
class Case:
    identity_index: int
    kind: str  # "single", "emotion", "random"
    label: str
    source_aus: np.ndarray
    target_aus: np.ndarray


def target_suite(random_combinations: int = 10, seed: int = 0) -> list[tuple[str, str, np.ndarray]]:
    """(kind, label, AUs): each AU alone at 0.33/0.66/1.0, the basic emotions, random combinations."""
    from ganimation.synth import LABEL_PROTOTYPES

    suite: list[tuple[str, str, np.ndarray]] = []
    for index, name in enumerate(AU_NAMES):
        for level in SINGLE_AU_LEVELS:
            vector = np.zeros(NUM_AUS, dtype=np.float32)
            vector[index] = level
            suite.append(("single", f"{name}={level:.2f}", vector))
    # the world's own emotions (synth.LABEL_PROTOTYPES): the benchmark does not move when the
    # named expressions users ask for (aus.EXPRESSIONS) do
    for expression, prototype in LABEL_PROTOTYPES.items():
        suite.append(("emotion", expression, aus_from_mapping(prototype)))
    rng = np.random.default_rng(seed)
    for number in range(random_combinations):
        vector = np.zeros(NUM_AUS, dtype=np.float32)
        chosen = rng.choice(NUM_AUS, size=rng.integers(2, 5), replace=False)
        vector[chosen] = rng.uniform(0.3, 1.0, size=len(chosen))
        suite.append(("random", f"random{number}", vector))
    return suite


@dataclass
class MethodScores:
    """Per-edit metrics of one method, and their means."""

    name: str
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, **metrics: float) -> None:
        for key, value in metrics.items():
            self.values.setdefault(key, []).append(float(value))

    def means(self) -> dict[str, float]:
        return {key: float(np.mean(values)) for key, values in self.values.items()}


EditFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]


def copy_input(image: np.ndarray, source_aus: np.ndarray, target_aus: np.ndarray):  # type: ignore[no-untyped-def]
    """The baseline: return the input unchanged."""
    return image, None, None


def model_editor(model) -> EditFunction:  # type: ignore[no-untyped-def]
    """An edit function from a :class:`~ganimation.inference.GANimation`."""

    def edit(image: np.ndarray, source_aus: np.ndarray, target_aus: np.ndarray):  # type: ignore[no-untyped-def]
        result = model.animate(image, target_aus)
        return result.image, result.attention, result.colour

    return edit


def evaluate(methods: dict[str, EditFunction], identities: Sequence[object], size: int, regressor,  # type: ignore[no-untyped-def]
             random_combinations: int = 10, seed: int = 0, grid_path: Path | None = None,
             grid_rows: int = 8) -> dict[str, object]:
    """Run the suite for every identity and method; return a JSON-able report."""
    from ganimation import synth

    if not identities or not methods:
        raise ValueError(f"evaluation needs at least one identity and one method, got {len(identities)} "
                         f"identities and {len(methods)} methods")
    suite = target_suite(random_combinations, seed)
    scores = {name: MethodScores(name) for name in methods}
    truth_errors: list[float] = []
    truth_errors_all: list[float] = []
    # Per single-AU target ("AU17=1.00"), what the regressor reads of that AU: does the edit draw it
    # as strongly as the true render shows it?
    readings: dict[str, dict[str, list[float]]] = {}
    grid: list[list[np.ndarray]] = []
    rng = np.random.default_rng(seed)
    grid_picks = set(rng.choice(len(identities) * len(suite), size=min(grid_rows, len(identities) * len(suite)),
                                replace=False).tolist())
    neutral = np.zeros(NUM_AUS, dtype=np.float32)
    progress = tqdm(total=len(identities) * len(suite), desc="evaluate", unit="edit")
    for identity_index, identity in enumerate(identities):
        source = synth.render_face(identity, neutral, size)
        face_mask = synth.face_region_mask(identity, size)
        outside = ~face_mask
        for name, edit in methods.items():
            # Kept out of the suite's means: how close an edit stays to the input when asked for the
            # AUs the face already has, which bounds how well small edits can score.
            kept, _, _ = edit(source, neutral, neutral)
            scores[name].add(psnr_same_aus=min(psnr(kept, source), PSNR_CAP))
        for case_index, (kind, label, target) in enumerate(suite):
            truth = synth.render_face(identity, target, size)
            changed = (truth != source).any(axis=2)  # the pixels the true edit changes
            truth_reading = regressor.predict(truth)
            truth_target_error, truth_all_error = au_errors(truth_reading, target, neutral)
            asked = int(np.argmax(target)) if kind == "single" else -1
            if asked >= 0:
                readings.setdefault(label, {}).setdefault("truth", []).append(float(truth_reading[asked]))
            truth_errors.append(truth_target_error)
            truth_errors_all.append(truth_all_error)
            row = [source, truth]
            for name, edit in methods.items():
                edited, attention, colour = edit(source, neutral, target)
                reading = regressor.predict(edited)
                au_error, au_error_all = au_errors(reading, target, neutral)
                if asked >= 0:
                    readings[label].setdefault(name, []).append(float(reading[asked]))
                scores[name].add(
                    psnr=min(psnr(edited, truth), PSNR_CAP), psnr_face=min(psnr(edited, truth, face_mask), PSNR_CAP),
                    ssim=ssim(edited, truth), ssim_face=ssim(edited, truth, face_mask), au_error=au_error,
                    au_error_all=au_error_all, change_outside=mean_abs_change(edited, source, outside))
                scores[name].values.setdefault(f"au_error/{kind}", []).append(au_error)
                mse_changed, mse_unchanged = squared_error_split(edited, truth, changed)
                scores[name].add(mse_changed=mse_changed, mse_unchanged=mse_unchanged)
                if name != "copy":
                    row.append(edited)
                    if attention is not None:
                        row.append(np.repeat((np.asarray(attention)[..., None] * 255).round().astype(np.uint8), 3, 2))
                    if colour is not None:
                        row.append(colour)
            if identity_index * len(suite) + case_index in grid_picks:
                grid.append(row)
            progress.update(1)
    progress.close()
    report = {
        "identities": len(identities), "edits_per_method": len(identities) * len(suite), "image_size": size,
        "suite": {"single_au_levels": list(SINGLE_AU_LEVELS), "emotions": [label for kind, label, _ in suite if kind == "emotion"],
                  "random_combinations": random_combinations},
        "regressor_error_on_ground_truth": float(np.mean(truth_errors)),
        "regressor_error_on_ground_truth_all_aus": float(np.mean(truth_errors_all)),
        "methods": {name: method.means() for name, method in scores.items()},
        "single_au_readings": {label: {source: float(np.mean(values)) for source, values in by_source.items()}
                               for label, by_source in readings.items()},
    }
    if grid_path is not None and grid:
        from ganimation.video import grid as tile

        width = max(len(row) for row in grid)
        padded = [row + [np.full_like(row[0], 255)] * (width - len(row)) for row in grid]
        save_image(grid_path, tile(padded))
    return report


def markdown_table(report: dict[str, object]) -> str:
    """The report's method means as a markdown table."""
    methods: dict[str, dict[str, float]] = report["methods"]  # type: ignore[assignment]
    columns = [("AU error ↓", "au_error", "{:.3f}"), ("AU error, all 17 ↓", "au_error_all", "{:.3f}"),
               ("PSNR ↑", "psnr", "{:.2f}"), ("PSNR face ↑", "psnr_face", "{:.2f}"),
               ("SSIM ↑", "ssim", "{:.3f}"), ("SSIM face ↑", "ssim_face", "{:.3f}"),
               ("change outside face ↓", "change_outside", "{:.4f}"), ("PSNR, same AUs ↑", "psnr_same_aus", "{:.2f}")]
    lines = ["| method | " + " | ".join(title for title, _, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name, means in methods.items():
        lines.append(f"| {name} | " + " | ".join(fmt.format(means[key]) for _, key, fmt in columns) + " |")
    lines.append("")
    lines.append(f"{report['identities']} held-out identities, {report['edits_per_method']} edits per method, "
                 f"{report['image_size']} px. AU error: mean absolute error (AU units 0-1) of the independent "
                 f"regressor's reading of the edit against the target, on the AUs the edit asks to change; "
                 f"'all 17' also counts the AUs that should stay put. 'PSNR, same AUs' (not in the other "
                 f"means): each neutral source edited towards neutral, against the source itself. The "
                 f"regressor's own error on the ground-truth renders: "
                 f"{report['regressor_error_on_ground_truth']:.3f} "
                 f"(all 17: {report['regressor_error_on_ground_truth_all_aus']:.3f}).")
    readings: dict[str, dict[str, float]] = report.get("single_au_readings", {})  # type: ignore[assignment]
    full = {label: values for label, values in readings.items() if label.endswith(f"={SINGLE_AU_LEVELS[-1]:.2f}")}
    if full:
        sources = list(next(iter(full.values())))
        lines += ["", f"The regressor's reading of the AU asked for alone at {SINGLE_AU_LEVELS[-1]:.2f}, mean over "
                  f"identities (the true render shows what a perfect edit would read):", "",
                  "| target | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
        lines += [f"| {label} | " + " | ".join(f"{values[source]:.2f}" for source in sources) + " |"
                  for label, values in full.items()]
    return "\n".join(lines) + "\n"


def _strict_json(value: object) -> object:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN or Infinity)."""
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(report: dict[str, object], output_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``evaluation.json`` (strict JSON: a non-finite mean is written as null) and ``evaluation.md``."""
    folder = Path(output_dir)
    json_path, table_path = folder / "evaluation.json", folder / "evaluation.md"
    write_text_atomic(json_path, json.dumps(_strict_json(report), indent=2, allow_nan=False) + "\n")
    write_text_atomic(table_path, markdown_table(report))
    return json_path, table_path
