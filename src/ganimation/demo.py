"""``ganimation demo``: what the tool does, end to end, on a fresh machine with no download.

With the bundled model (or a given checkpoint) it renders a few synthetic faces the model never
saw, animates them through the basic expressions and a sweep of single AUs, and edits the bundled
sample photo; everything lands in ``out/``: a GIF, an MP4, a grid with the attention and colour
masks, and the whole-photo edit. Without any model it first trains a small one for a few minutes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ganimation.animation import interpolate_aus
from ganimation.aus import AU_NAMES, EXPRESSIONS, NUM_AUS, expression_aus
from ganimation.files import save_image
from ganimation.video import grid, write_video

logger = logging.getLogger(__name__)

DEMO_EXPRESSIONS = ("happy", "surprise", "sad", "anger", "disgust", "fear")
SWEEP_AUS = ("AU01", "AU04", "AU12", "AU15", "AU25", "AU26", "AU45")


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    picture = Image.fromarray(tile)
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, 0, picture.width, 10), fill=(0, 0, 0))
    draw.text((2, -1), text, fill=(255, 255, 255))
    return np.asarray(picture)


def train_fallback_model(output: Path, minutes_budget_steps: int = 300) -> Path:
    """No bundled model: train a small one on a fresh synthetic set (a few minutes on 2 cores)."""
    from ganimation.config import build_config
    from ganimation.synth import write_synthetic_dataset
    from ganimation.training import train

    data = write_synthetic_dataset(output / "demo_data", identities=40, per_identity=8, size=32, seed=0)
    config = build_config("smoke", overrides=[f"data.root={data}", f"run.output_dir={output / 'demo_run'}",
                                              f"optim.max_steps={minutes_budget_steps}", "run.sample_every=100",
                                              "run.checkpoint_every=100", "run.log_every=20"])
    return train(config, overwrite=True)  # the demo's own scratch run, remade with its data


def run_demo(output_dir: str | Path = "out", checkpoint: str | Path | None = None, faces: int = 3,
             frames: int = 16, seed: int = 2024, photo: bool = True) -> dict[str, Path]:
    """Write the demo outputs; returns what was written, by kind.

    ``frames`` is the length of each transition to an expression (at least 2); the way back to
    neutral takes half as many (and at least 2).
    """
    from ganimation import synth
    from ganimation.inference import GANimation, bundled_model_path

    if faces < 1:
        raise ValueError(f"the demo needs at least 1 face, got {faces}")
    if frames < 2:
        raise ValueError(f"a transition needs at least 2 frames, got {frames}")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if checkpoint is None and bundled_model_path() is None:
        logger.warning("no bundled model in this installation: training a small one first")
        checkpoint = train_fallback_model(output)
    model = GANimation.load(checkpoint)
    size = model.image_size
    logger.info("model %s (%d px)", model.source, size)
    rng = np.random.default_rng(seed)
    identities = [synth.sample_identity(rng) for _ in range(faces)]
    neutral = np.zeros(NUM_AUS, dtype=np.float32)
    sources = [synth.render_face(identity, neutral, size) for identity in identities]
    written: dict[str, Path] = {}

    # 1. Expressions with masks: source | edit | attention | colour, one row per (face, expression).
    rows = []
    for source in sources:
        for expression in DEMO_EXPRESSIONS[:4]:
            result = model.animate(source, expression_aus(expression))
            rows.append([_label(source, "input"), _label(result.image, expression),
                         _label(result.attention_image(), "attention"), _label(result.colour, "colour")])
    written["grid"] = save_image(output / "expressions_with_masks.png", grid(rows))

    # 2. An animation through the basic expressions and back, for every face side by side.
    sequence = demo_sequence(frames)
    per_face = [[result.image for result in model.animate_batch(source, sequence)] for source in sources]
    animation = [np.concatenate([face_frames[index] for face_frames in per_face], axis=1)
                 for index in range(len(sequence))]
    written["gif"] = write_video(output / "expressions.gif", animation, fps=12)
    written["mp4"] = write_video(output / "expressions.mp4", animation, fps=12)

    # 3. A sweep of single AUs from 0 to 1: one row per AU.
    levels = np.linspace(0.0, 1.0, 5)
    sweep_rows = []
    for name in SWEEP_AUS:
        vectors = []
        for level in levels:
            vector = neutral.copy()
            vector[AU_NAMES.index(name)] = level
            vectors.append(vector)
        results = model.animate_batch(sources[0], vectors)
        sweep_rows.append([_label(result.image, f"{name}={level:.2f}") for result, level in zip(results, levels)])
    written["sweep"] = save_image(output / "au_sweep.png", grid(sweep_rows))

    # 4. A whole photo in, a whole photo out.
    if photo:
        written.update(_photo_demo(model, output, frames))
    return written


def demo_sequence(frames: int) -> list[np.ndarray]:
    """Neutral, then each demo expression and back: ``frames`` steps there, ``max(2, frames // 2)`` back."""
    neutral = np.zeros(NUM_AUS, dtype=np.float32)
    sequence = [neutral]
    for expression in DEMO_EXPRESSIONS:
        target = expression_aus(expression)
        sequence += list(interpolate_aus(sequence[-1], target, frames))[1:]
        sequence += list(interpolate_aus(target, neutral, max(2, frames // 2)))[1:]
    return sequence


#: What the sample photo is moved to: she already smiles, so the demo shows the others.
PHOTO_EXPRESSIONS = ("surprise", "sad", "anger", "fear", "disgust")


def _photo_demo(model, output: Path, frames: int) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    """The bundled photo (a real face) moved to each expression: the whole photo surprised, a strip
    of face crops, and an animation of her face through the expressions and back."""
    from ganimation.animation import PhotoAnimator
    from ganimation.faces import FaceError, align_face, sample_photo_path
    from ganimation.files import load_image

    photo = load_image(sample_photo_path())
    animator = PhotoAnimator(model)
    try:
        aligned = animator.align(photo, source=sample_photo_path())
    except FaceError as error:
        logger.warning("photo demo skipped: %s", error)
        return {}
    own = animator.source_aus(aligned[0])
    targets = {name: animator.toward_expression(aligned, expression_aus(name), 1.0)[0] for name in PHOTO_EXPRESSIONS}
    edits = {name: animator.edit(photo, target, aligned=aligned).image for name, target in targets.items()}

    def face(image: np.ndarray) -> np.ndarray:  # the face, larger than the model's crop
        return align_face(image, aligned[0].face, PHOTO_FACE_SIZE).crop

    strip = [_label(face(photo), "photo")] + [_label(face(image), name) for name, image in edits.items()]
    sequence = [own]
    for target in targets.values():
        sequence += list(interpolate_aus(sequence[-1], target, frames))[1:]
        sequence += [target] * max(1, frames // 4)  # hold the expression a moment
        sequence += list(interpolate_aus(target, own, max(2, frames // 2)))[1:]
    clip = [face(frame) for frame in animator.render(photo, aligned, [np.stack(sequence)])]
    return {"photo": save_image(output / "photo_surprise.png", np.concatenate([photo, edits["surprise"]], axis=1)),
            "photo_strip": save_image(output / "photo_expressions.png", np.concatenate(strip, axis=1)),
            "photo_gif": write_video(output / "photo_expressions.gif", clip, fps=12)}


#: Side of the face crops the photo demo shows (the photo's face is about this large).
PHOTO_FACE_SIZE = 192


__all__ = ["run_demo", "demo_sequence", "EXPRESSIONS"]
