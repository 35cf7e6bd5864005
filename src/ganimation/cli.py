"""The ``ganimation`` command: a thin layer over the library API."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ganimation import __version__
from ganimation.runtime import apply_process_environment

logger = logging.getLogger("ganimation")

EXAMPLES = """\
examples:
  ganimation demo                                        # bundled model, sample faces -> out/
  ganimation animate photo.jpg --expression happy -o happy.jpg   # the bundled model on your photo
  ganimation synth data/synth --identities 200 --per-identity 20 --size 128
  ganimation annotate photos/ clip.mp4 -o data/mine      # aligned crops + AU labels, no OpenFace
  ganimation prepare data/synth                          # validate a dataset before training
  ganimation train --data data/synth --preset paper128 -o runs/exp1
  ganimation train -o runs/exp1 --resume                 # continue exactly where it stopped
  ganimation train --data data/mine --preset cpu64 -o runs/tuned --init bundled   # fine-tune a model
  torchrun --nproc_per_node 4 -m ganimation train --data data/synth -o runs/ddp   # data-parallel
  ganimation convert net_epoch_30_id_G.pth -o model.safetensors   # import the authors' weights
  ganimation animate photo.jpg --checkpoint runs/exp1 --expression happy -o happy.jpg   # with the model trained above
  ganimation web --checkpoint runs/exp1                  # web app on http://127.0.0.1:7860
"""

ANIMATE_EXAMPLES = """\
examples (the bundled model; --checkpoint RUN uses your own):
  ganimation animate photo.jpg --expression happy -o happy.jpg
  ganimation animate photo.jpg --expression happy --intensity 0.5 -o smile.png --masks   # halfway, with masks
  ganimation animate photo.jpg --au AU12=0.8 --au AU06=0.6 --gif smile.gif    # from the face as it is to the AUs
  ganimation animate photo.jpg --face all --expression surprise -o surprised.mp4
  ganimation animate photo.jpg --timeline keyframes.json -o clip.mp4          # docs/animate.md: the JSON
  ganimation animate video.mp4 --expression happy -o happy.mp4                # every frame, at its frame rate
  ganimation animate crop.png --crop --au AU12=1 -o smile.png                 # an aligned face crop
"""


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model on a folder of faces with OpenFace AUs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any config value can be set with --set section.key=value, e.g. --set optim.epochs=5 "
               "--set data.batch_size=16.\nThe resolved config is saved as OUTPUT/config.yaml.")
    parser.add_argument("--data", help="dataset folder (images + OpenFace AU CSV); see docs/data.md")
    parser.add_argument("-o", "--output", help="run folder for checkpoints, samples and logs")
    parser.add_argument("--preset", default=None,
                        help="named preset: paper128 (default: the paper's setting), official (the same, "
                             "trained as the authors' code trains it; docs/training.md), cpu64, smoke")
    parser.add_argument("--config", help="YAML/TOML/JSON config file laid over the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run already in --output (checkpoints, samples, metrics, model) and "
                             "train anew; without it or --resume, a folder holding a run is refused")
    parser.add_argument("--init", metavar="MODEL",
                        help="start from a trained model (file, checkpoint, run folder or 'bundled') instead of "
                             "random weights; wider model.*_channels grow it (sets run.init_from)")
    parser.add_argument("--steps", type=int, help="stop after this many critic steps (sets optim.max_steps)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from ganimation.config import build_config, load_config_file, apply_mapping, Config
    from ganimation.training import train

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.root={args.data}")
    if args.output:
        overrides.append(f"run.output_dir={args.output}")
    if args.steps is not None:
        overrides.append(f"optim.max_steps={args.steps}")
    if args.init:
        overrides.append(f"run.init_from={args.init}")
    config_file = args.config
    if args.resume and args.output and not args.config and (Path(args.output) / "config.yaml").is_file():
        # Resuming: start from the run's own saved config; command-line overrides still apply.
        config = Config()
        apply_mapping(config, load_config_file(Path(args.output) / "config.yaml"))
        from ganimation.config import apply_override

        for assignment in overrides:
            apply_override(config, assignment)
        config.validate()
    else:
        config = build_config(args.preset, config_file, overrides)
    if not config.data.root:
        raise ValueError("no dataset given: pass --data FOLDER")
    if torch_distributed_requested():
        return _train_distributed(config, args)
    model_path = train(config, resume=args.resume, overwrite=args.overwrite, show_progress=not args.no_progress)
    print(f"model: {model_path}")
    return 0


def torch_distributed_requested() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _train_distributed(config, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    import gc

    import torch
    import torch.distributed as dist

    from ganimation.training import train

    backend = "nccl" if torch.cuda.is_available() and config.run.device != "cpu" else "gloo"
    dist.init_process_group(backend=backend)
    try:
        model_path = train(config, resume=args.resume, overwrite=args.overwrite, show_progress=not args.no_progress)
        if dist.get_rank() == 0:
            print(f"model: {model_path}")
    finally:
        # DDP's reducer holds the process group: free any wrapper left in a reference cycle first,
        # or Gloo's threads are torn down at interpreter exit, which can abort the process.
        gc.collect()
        dist.destroy_process_group()
    return 0


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="import weights of the authors' GANimation code or of ganimation_replicate",
        description="Convert a generator .pth of the original GANimation code (net_epoch_<E>_id_G.pth) or "
                    "of the 2018 replication (<epoch>_net_gen.pth) into a model file. The critic file "
                    "beside it (..._id_D.pth / ..._net_dis.pth) is included when found. A model file or run "
                    "folder of this package is re-saved, e.g. as float16 with --half. See docs/checkpoints.md.")
    parser.add_argument("source", metavar="SRC", help="generator checkpoint (.pth), or one of our model files / runs")
    parser.add_argument("-o", "--output", required=True, metavar="DST", help="model file to write (.safetensors)")
    parser.add_argument("--discriminator", metavar="D.pth", help="critic checkpoint (default: found beside SRC)")
    parser.add_argument("--half", action="store_true", help="store the weights as float16 (half the size)")
    parser.add_argument("--image-size", type=int, help="image size when there is no critic file (default 128)")
    parser.add_argument("--attention-scale", type=float, default=1.0, metavar="FACTOR",
                        help="multiply the attention mask's logits by FACTOR: below 1 softens the mask, so the "
                             "edit shows more (default 1, the weights as they are)")
    parser.set_defaults(handler=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from ganimation.convert import convert_checkpoint
    from ganimation.checkpoint import read_model_file

    path = convert_checkpoint(args.source, args.output, discriminator=args.discriminator, half=args.half,
                              image_size=args.image_size, attention_scale=args.attention_scale)
    config, tensors, _ = read_model_file(path)
    has_critic = any(key.startswith("discriminator.") for key in tensors)
    print(f"model: {path} ({config.image_size} px, {config.num_aus} AUs, "
          f"{'with' if has_critic else 'without'} critic{', float16' if args.half else ''})")
    return 0


def _add_prepare(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("prepare", help="validate a dataset and report what was found")
    parser.add_argument("data", help="dataset folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-image-check", action="store_true", help="do not open every image")
    parser.set_defaults(handler=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from ganimation.data import validate_dataset

    report = validate_dataset(args.data, check_images=not args.no_image_check)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1


def _add_synth(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synth", help="render a synthetic face dataset with ground-truth AUs")
    parser.add_argument("output", help="dataset folder to write")
    parser.add_argument("--identities", type=int, default=100, help="how many different faces (default 100)")
    parser.add_argument("--per-identity", type=int, default=20,
                        help="images of each face, at different expressions (default 20)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128, the paper's)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed: the same seed and options give the same data set (default 0)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of the identities held out as the test split, test_ids.csv (default 0.2)")
    parser.add_argument("--variations", type=float, default=0.0,
                        help="chance that an image is a small change of an earlier one of the same identity, "
                             "as neighbouring video frames are (default 0: independent expressions)")
    parser.add_argument("--single-aus", type=float, default=0.0,
                        help="chance that an image shows one AU alone, as FACS material poses them "
                             "(default 0: AUs mostly with their emotions' partners)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes rendering in parallel, 0 = one per CPU core (the data set is the same)")
    parser.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from ganimation.synth import write_synthetic_dataset

    path = write_synthetic_dataset(args.output, identities=args.identities, per_identity=args.per_identity,
                                   size=args.size, seed=args.seed, test_fraction=args.test_fraction,
                                   variations=args.variations, workers=args.workers, single_aus=args.single_aus)
    print(f"dataset: {path}")
    return 0


def _add_animate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "animate", help="edit the expression of a face towards target AUs",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=ANIMATE_EXAMPLES)
    parser.add_argument("image", help="face image (an aligned crop with --crop, else a photo)")
    parser.add_argument("--checkpoint", help="model file, checkpoint or run folder (default: bundled model)")
    parser.add_argument("--au", action="append", default=[], metavar="AU=VALUE",
                        help="target AU intensity in [0, 1], e.g. AU12=0.8 (repeatable)")
    parser.add_argument("--expression", help="named expression: happy, sad, surprise, fear, anger, disgust, "
                                             "contempt, neutral")
    parser.add_argument("--intensity", type=float, default=1.0,
                        help="how far towards --expression, 0..1 (default 1): on a photo or video, 0 keeps each face's "
                             "own expression and 1 is the full expression; on a --crop, the expression scaled from neutral")
    parser.add_argument("--source-au", action="append", default=[], metavar="AU=VALUE",
                        help="where the interpolation (--gif, --mp4, a video -o) starts, e.g. AU12=0.2 "
                             "(repeatable; AUs not given are 0). Default: each face's own AUs, read from the "
                             "photo; zeros with --crop")
    parser.add_argument("-o", "--output",
                        help="output file, by its suffix: an edited image (.png, .jpg, .webp, ...) or the "
                             "interpolation as a video (.mp4, .gif); a video input or --timeline needs a video")
    parser.add_argument("--frames", type=int, default=24,
                        help="frames of the interpolation for --gif, --mp4 or a video -o (default 24)")
    parser.add_argument("--gif", metavar="OUT.gif", help="also write the interpolation as an animated GIF")
    parser.add_argument("--mp4", metavar="OUT.mp4", help="also write the interpolation as an MP4 video")
    parser.add_argument("--fps", type=float, default=12.0,
                        help="frame rate of the interpolation (default 12); a --timeline and a video input "
                             "keep their own")
    parser.add_argument("--masks", action="store_true", help="also save the attention and colour masks")
    parser.add_argument("--timeline", help="JSON keyframes (time -> AUs or expression) rendered to -o VIDEO")
    parser.add_argument("--crop", action="store_true", help="the input is already an aligned face crop: no detection")
    _add_face_options(parser)
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu or cuda")
    parser.add_argument("--bf16", action="store_true",
                        help="edit in bfloat16 where the device has it natively (a GPU from Ampere on, a CPU with "
                             "AVX512-BF16 or AMX: 2-4x faster there, within 50 dB of float32); refused with a "
                             "warning elsewhere")
    parser.set_defaults(handler=_run_animate)


def _add_face_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--face", default="largest",
                        help="which face of a photo: largest (default), all, or an index (0 = leftmost)")
    parser.add_argument("--allow-no-face", action="store_true",
                        help="when no face is found, write the input unchanged to the output (re-encoded if the "
                             "output's format differs, a still clip for a video output) instead of failing")
    parser.add_argument("--min-face", type=float, default=48,
                        help="faces narrower than this many pixels are skipped (--face all) or refused (default 48)")
    parser.add_argument("--blend", choices=("residual", "replace"), default="residual",
                        help="how an edited face goes back into the photo: residual (default) adds only the "
                             "model's change, so a model smaller than the face does not blur it; replace pastes "
                             "the model's whole output crop")


def target_aus_from_args(args: argparse.Namespace) -> np.ndarray:
    from ganimation.aus import aus_from_mapping, expression_aus, parse_au_assignments

    base = expression_aus(args.expression, args.intensity) if args.expression else None
    assignments = parse_au_assignments(args.au)
    if base is None and not assignments:
        raise ValueError("no target expression: give --au AU12=0.8 (repeatable) or --expression NAME")
    return aus_from_mapping(assignments, base)


def _suffixed(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.stem}_{suffix}{path.suffix}")


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, in one line and before any work, an output whose suffix names nothing animate writes."""
    from ganimation.files import check_output_file, writable_image_format
    from ganimation.video import check_video_output, is_animation, is_video

    for path in (args.output, args.gif, args.mp4):
        if path:
            check_output_file(path)

    if args.output and not is_animation(args.output) and writable_image_format(args.output) is None:
        raise ValueError(f"{args.output}: unknown output type {Path(args.output).suffix or '(no suffix)'}: give an "
                         f"image (.png, .jpg, .webp, ...) or a video (.mp4, .gif)")
    if args.gif and Path(args.gif).suffix.lower() != ".gif":
        raise ValueError(f"--gif {args.gif}: a GIF's name ends in .gif")
    if args.mp4 and not is_video(args.mp4):
        raise ValueError(f"--mp4 {args.mp4}: a video's name ends in .mp4 (or .mov, .mkv, .avi, .m4v)")
    for path in (args.output, args.mp4):
        if path and is_animation(path):
            check_video_output(path)
    if args.frames < 2:
        raise ValueError(f"--frames must be at least 2 (the start and the target), got {args.frames}")
    still = args.output and not is_animation(args.output)
    if args.masks and not still:
        logger.warning("--masks: the masks are saved beside an edited image (-o OUT.png), not for a GIF or video")


def _run_animate(args: argparse.Namespace) -> int:
    from ganimation.aus import aus_from_mapping, parse_au_assignments
    from ganimation.files import load_image, save_image
    from ganimation.inference import GANimation

    if not (args.output or args.gif or args.mp4):
        raise ValueError("nothing to write: give -o OUT.png, --gif OUT.gif or --mp4 OUT.mp4")
    _check_outputs(args)
    from ganimation.video import is_video

    if not args.crop and (is_video(args.image) or args.timeline):
        return _animate_video(args)
    target = target_aus_from_args(args)
    source = aus_from_mapping(parse_au_assignments(args.source_au)) if args.source_au else None
    image = load_image(args.image)
    model = GANimation.load(args.checkpoint, device=args.device, bf16=args.bf16)
    if not args.crop:
        return _animate_photo(model, image, source, target, args)
    source = source if source is not None else np.zeros_like(target)
    if not model.paints_photos:
        logger.warning("%s: this model's generator learned synthetic faces only and --crop runs it alone; for a "
                       "real face give the photo without --crop, so that its shape model moves the face", args.image)
    if args.output:
        result = model.animate(image, target)
        output = save_image(args.output, result.image)
        print(f"edited: {output}")
        if args.masks:
            print(f"attention: {save_image(_suffixed(output, 'attention'), result.attention_image())}")
            print(f"colour: {save_image(_suffixed(output, 'colour'), result.colour)}")
    if args.gif or args.mp4:
        from ganimation.video import write_video

        frames = [result.image for result in model.interpolate(image, source, target, args.frames)]
        for path in (args.gif, args.mp4):
            if path:
                print(f"video: {write_video(path, frames, fps=args.fps)}")
    return 0


def _which(text: str) -> int | str:
    return int(text) if text.lstrip("-").isdigit() else text


def _photo_animator(model, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ganimation.animation import DEFAULT_BLEND, PhotoAnimator

    return PhotoAnimator(model, which=_which(args.face), min_face=args.min_face,
                         blend=getattr(args, "blend", DEFAULT_BLEND))


def _copy_when_no_face(args: argparse.Namespace, error: Exception, frames: int | None = None,
                       fps: float | None = None) -> int:
    """--allow-no-face: every output gets the input, unchanged; otherwise the error stands.

    An output in the input's format gets the input's bytes; another image format gets the
    input re-encoded; a video or GIF output gets a still clip of ``frames`` frames (default:
    one second) at ``fps``.
    """
    import shutil

    from PIL import Image

    from ganimation.faces import NoFaceError

    if not (getattr(args, "allow_no_face", False) and isinstance(error, NoFaceError)):
        raise error
    from ganimation.animation import match_kind, photo_kind
    from ganimation.files import atomic_output, load_image, save_image
    from ganimation.video import is_animation, write_video

    source = Path(args.image)
    formats = Image.registered_extensions()
    outputs = dict.fromkeys(Path(path) for path in (getattr(args, "output", None), getattr(args, "gif", None),
                                                    getattr(args, "mp4", None)) if path)
    image = None
    for path in outputs:
        suffix = path.suffix.lower()
        if suffix == source.suffix.lower() or (formats.get(suffix) is not None
                                               and formats.get(suffix) == formats.get(source.suffix.lower())):
            with atomic_output(path) as temp:
                shutil.copyfile(source, temp)
        else:
            image = image if image is not None else load_image(source)
            if is_animation(path):
                rate = fps or getattr(args, "fps", None) or 12.0
                count = frames if frames and frames > 0 else max(2, round(rate))
                write_video(path, (image for _ in range(count)), fps=rate)
            else:
                save_image(path, match_kind(image, photo_kind(source), suffix))
        print(f"no face found in {source.name}: wrote the input unchanged to {path}")
    return 0


def _animate_photo(model, image: np.ndarray, source: np.ndarray | None, target: np.ndarray,  # type: ignore[no-untyped-def]
                   args: argparse.Namespace) -> int:
    """Edit the chosen face(s) of a photo: ``-o PHOTO`` gets the edit, ``--gif``/``--mp4`` (or ``-o
    VIDEO``) an interpolation from each face as it is (its D_y estimate) to the target."""
    from ganimation.animation import grey_frames, match_kind, photo_kind
    from ganimation.faces import FaceError
    from ganimation.files import save_image
    from ganimation.video import is_animation, write_video

    still = args.output if args.output and not is_animation(args.output) else None
    clips = list(dict.fromkeys(path for path in (args.output if args.output and is_animation(args.output) else None,
                                                 args.gif, args.mp4) if path))
    frames = args.frames
    animator = _photo_animator(model, args)
    try:
        aligned = animator.align(image, source=args.image)
    except FaceError as error:
        return _copy_when_no_face(args, error, frames=frames if clips else None, fps=args.fps)
    if args.expression:  # --intensity moves each face from its own AUs towards the expression
        from ganimation.aus import aus_from_mapping, expression_aus, parse_au_assignments

        assignments = parse_au_assignments(args.au)
        target = np.stack([aus_from_mapping(assignments, row) for row in
                           animator.toward_expression(aligned, expression_aus(args.expression), args.intensity)])
    kind = photo_kind(args.image)
    if still:
        edit = animator.edit(image, target, aligned=aligned)
        output = save_image(still, match_kind(edit.image, kind, Path(still).suffix))
        print(f"edited: {output} ({len(edit.faces)} face(s))")
        if args.masks and not model.paints_photos:
            print("masks: none, this model moved the faces by its shape model and painted nothing")
        elif args.masks:
            attention = edit.attention_map()
            if attention is not None:
                grey = np.repeat((attention[..., None] * 255).round().astype(np.uint8), 3, axis=2)
                print(f"attention: {save_image(_suffixed(output, 'attention'), grey)}")
            for number, (face, face_target) in enumerate(zip(edit.faces, np.broadcast_to(target, (len(edit.faces), target.shape[-1])))):
                result = model.animate(face.crop, face_target)
                print(f"colour: {save_image(_suffixed(output, f'colour{number}'), result.colour)}")
    if clips:
        sequence = list(grey_frames(animator.interpolation(image, target, frames, source, aligned=aligned), kind))
        for path in clips:
            print(f"video: {write_video(path, sequence, fps=args.fps)} ({len(sequence)} frames at {args.fps:g} fps)")
    return 0


def _animate_video(args: argparse.Namespace) -> int:
    """A timeline over a photo, or a video whose every frame is edited (its frame rate is kept)."""
    from tqdm import tqdm

    from ganimation.animation import edit_video_frames, grey_frames, photo_kind, read_timeline, timeline_aus
    from ganimation.faces import FaceError
    from ganimation.files import load_image
    from ganimation.inference import GANimation
    from ganimation.video import is_animation, is_video, read_video, write_video

    outputs = list(dict.fromkeys(path for path in (args.output, args.mp4, args.gif) if path))
    for path in outputs:
        if not is_animation(path):
            what = "an edited video" if is_video(args.image) else "a timeline"
            raise ValueError(f"{path}: {what} is written as a video: give an .mp4 or .gif output")
    keyframes, timeline_fps = read_timeline(args.timeline) if args.timeline else (None, None)
    if is_video(args.image):
        target = None if keyframes else target_aus_from_args(args)
        if args.face != "largest":
            logger.warning("--face %s is ignored for a video: the largest face is tracked", args.face)
        model = GANimation.load(args.checkpoint, device=args.device, bf16=args.bf16)
        frames, fps, count = read_video(args.image)
        relative = bool(args.expression) and not keyframes
        if keyframes:
            sequence = timeline_aus(keyframes, fps)
            aus_for_frame = lambda index: sequence[min(index, len(sequence) - 1)]  # noqa: E731
        elif relative:  # --intensity moves the face from its own AUs in each frame towards the expression
            from ganimation.aus import aus_from_mapping, expression_aus, parse_au_assignments

            full, assignments = expression_aus(args.expression), parse_au_assignments(args.au)
            aus_for_frame = lambda index, own: aus_from_mapping(  # noqa: E731
                assignments, own + args.intensity * (full - own))
        else:
            aus_for_frame = lambda index: target  # noqa: E731
        edited = edit_video_frames(model, tqdm(frames, total=count, desc="frames", unit="frame"), aus_for_frame,
                                   min_face=args.min_face, blend=args.blend, fps=fps,
                                   require_face=not args.allow_no_face, source=args.image, own_aus=relative)
        if len(outputs) > 1:
            edited = list(edited)
        for path in outputs:
            print(f"video: {write_video(path, edited, fps=fps)} (at {fps:g} fps)")
        return 0
    sequence = timeline_aus(keyframes, timeline_fps)
    photo = load_image(args.image)
    model = GANimation.load(args.checkpoint, device=args.device, bf16=args.bf16)
    animator = _photo_animator(model, args)
    try:
        aligned = animator.align(photo, source=args.image)
    except FaceError as error:
        return _copy_when_no_face(args, error, frames=len(sequence), fps=timeline_fps)
    frames = list(grey_frames(tqdm(animator.frames(photo, sequence, aligned=aligned), total=len(sequence),
                                   desc="frames", unit="frame"), photo_kind(args.image)))
    for path in outputs:
        print(f"video: {write_video(path, frames, fps=timeline_fps)} ({len(frames)} frames at {timeline_fps:g} fps)")
    return 0


def _add_aus(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("aus", help="read the 17 AU intensities of each face in an image")
    parser.add_argument("image", help="photo (or aligned face crop with --crop)")
    parser.add_argument("--reader", choices=("landmarks", "critic"), default="landmarks",
                        help="landmarks (default): the face landmark model's blendshapes mapped to AUs; "
                             "critic: the model's D_y head (knows only faces like its training data)")
    parser.add_argument("--checkpoint", help="with --reader critic: model file, checkpoint or run folder "
                                             "(default: bundled model)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--crop", action="store_true", help="the input is already an aligned face crop")
    parser.add_argument("--face", default="all", help="which faces: all (default), largest, or an index")
    parser.add_argument("--min-face", type=float, default=48,
                        help="skip faces narrower than this many pixels (default 48)")
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu or cuda")
    parser.set_defaults(handler=_run_aus)


def _run_aus(args: argparse.Namespace) -> int:
    """Print each face's 17 AU intensities (the AU reader's, or the critic's D_y) as a table or as JSON."""
    from ganimation.aus import AU_DESCRIPTIONS, AU_NAMES
    from ganimation.checkpoint import CheckpointError
    from ganimation.files import load_image
    from ganimation.inference import GANimation

    image = load_image(args.image)
    model = GANimation.load(args.checkpoint, device=args.device)
    if args.reader == "critic" and model.discriminator is None:
        raise CheckpointError(f"{model.source}: this model file has no critic, so it cannot estimate AUs")
    if args.crop and args.reader == "critic":
        faces = [{"face": 0, "box": [0.0, 0.0, float(image.shape[1]), float(image.shape[0])],
                  "aus": model.estimate_aus(image)}]
    else:
        animator = _photo_animator(model, args)
        animator.reader = args.reader
        estimates = animator.estimate(image, source=args.image)
        faces = [{"face": estimate.index, "box": [round(float(v), 1) for v in estimate.face.box], "aus": estimate.aus}
                 for estimate in estimates]
    if args.json:
        print(json.dumps([{"face": face["face"], "box": face["box"],
                           "aus": {name: round(float(value), 4) for name, value in zip(AU_NAMES, face["aus"])}}
                          for face in faces], indent=2))
        return 0
    names = [f"face{face['face']}" for face in faces]
    width = max(7, *(len(name) for name in names))
    print(f"{'AU':<6}{'meaning':<22}" + " ".join(f"{name:>{width}}" for name in names))
    for index, name in enumerate(AU_NAMES):
        values = " ".join(f"{float(face['aus'][index]):>{width}.3f}" for face in faces)
        print(f"{name:<6}{AU_DESCRIPTIONS[name]:<22}{values}")
    print()
    for name, face in zip(names, faces):
        print(f"{name}: box x0,y0,x1,y1 = " + ",".join(f"{value:g}" for value in face["box"]))
    return 0


def _add_annotate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "annotate", help="make a training set from photos, folders and videos: aligned crops + AU labels",
        description="Find every face, crop it as the model sees faces and read its 17 AUs with the landmark "
                    "model (no OpenFace needed). Writes OUT/images/*.png and OUT/aus.csv (OpenFace columns "
                    "AU01_r ... AU45_r, 0-5), which `ganimation prepare` and `train` read. Re-running skips "
                    "the photos and frames already done.")
    parser.add_argument("inputs", nargs="+", help="photos, folders (searched recursively) and videos")
    parser.add_argument("-o", "--output", required=True, help="data set folder to write (or to complete)")
    parser.add_argument("--size", type=int, default=128, help="crop side in pixels (default 128)")
    parser.add_argument("--every", type=int, default=10, help="use every N-th frame of a video (default 10)")
    parser.add_argument("--min-face", type=float, default=48,
                        help="skip faces narrower than this many photo pixels (default 48)")
    parser.add_argument("--workers", type=int, default=0, help="processes (default 0: one per core)")
    parser.set_defaults(handler=_run_annotate)


def _run_annotate(args: argparse.Namespace) -> int:
    from ganimation.annotate import annotate

    report = annotate(args.inputs, args.output, size=args.size, every=args.every, min_face=args.min_face,
                      workers=args.workers)
    for line in report.lines():
        print(line)
    return 0


def _add_reenact(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reenact", help="drive a photo with the expressions of a video (or of an OpenFace CSV)",
        description="Make the face in a photo follow a driving video's expressions: the video's AUs are read "
                    "frame by frame with the landmark model (or taken from an OpenFace CSV), smoothed, and "
                    "each frame of the output is the photo edited towards them.")
    driver = parser.add_mutually_exclusive_group(required=True)
    driver.add_argument("--driving", metavar="VIDEO", help="driving video whose face's AUs are read (no OpenFace needed)")
    driver.add_argument("--driving-aus", metavar="CSV", help="OpenFace FeatureExtraction CSV (frame, AU*_r)")
    parser.add_argument("image", help="photo (or aligned crop with --crop)")
    parser.add_argument("-o", "--output", required=True, help="video to write (.mp4 or .gif)")
    parser.add_argument("--relative", action="store_true",
                        help="add the driver's change from its first frame to the photo's own AUs, so a neutral "
                             "driver does not flatten a smiling photo (default: the driver's AUs as they are)")
    parser.add_argument("--checkpoint", help="model file, checkpoint or run folder (default: bundled model)")
    parser.add_argument("--fps", type=float, help="output frame rate (default: the driving video's; 30 for a CSV "
                                                  "without timestamps)")
    parser.add_argument("--smooth", type=int, help="centred moving-average window over output frames "
                                                   "(default 3 for a video, 1 = none for a CSV)")
    parser.add_argument("--crop", action="store_true", help="the photo is already an aligned face crop")
    _add_face_options(parser)
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu or cuda")
    parser.set_defaults(handler=_run_reenact)


def _run_reenact(args: argparse.Namespace) -> int:
    """Drive a photo with a video's AUs, read with the landmark model, or an OpenFace CSV's.

    The driver's timing is kept: a CSV's frame numbers become seconds at the rate its timestamps
    imply (``--fps`` when it has none), frames without a face are interpolated, and the result is
    sampled at ``--fps``, so the clip lasts as long as the driving video.
    """
    from tqdm import tqdm

    from ganimation.animation import (
        driving_aus, driving_frame_rate, driving_video_aus, face_aus, grey_frames, photo_kind, relative_aus,
    )
    from ganimation.faces import FaceError, align_face
    from ganimation.files import check_output_file, load_image
    from ganimation.inference import GANimation
    from ganimation.video import is_animation, write_video

    if not is_animation(args.output):
        raise ValueError(f"{args.output}: reenact writes a video: give an .mp4 or .gif output")
    check_output_file(args.output)
    if args.smooth is not None and args.smooth < 1:
        raise ValueError(f"--smooth must be at least 1 frame, got {args.smooth}")
    if args.fps is not None and not args.fps > 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    image = load_image(args.image)
    model = GANimation.load(args.checkpoint, device=args.device)
    if args.driving:
        if not Path(args.driving).is_file():
            raise ValueError(f"{args.driving}: no such driving video")
        sequence, fps = driving_video_aus(args.driving, fps=args.fps, smoothing=args.smooth or 3, progress=True)
    else:
        fps = args.fps or 30.0
        source_fps = driving_frame_rate(args.driving_aus) or fps
        sequence = driving_aus(args.driving_aus, smoothing=args.smooth or 1, fps=fps, source_fps=source_fps)
    if args.crop:
        if args.relative:
            from ganimation.faces import default_detector

            faces = default_detector().detect(image)
            own = face_aus(model, align_face(image, faces[0], image.shape[0])) if faces else None
            if own is None:
                raise FaceError(f"--relative needs the crop's own AUs, but no face was found in {Path(args.image).name}")
            sequence = relative_aus(sequence, own)
        frames = [result.image for result in model.animate_batch(image, sequence)]
    else:
        animator = _photo_animator(model, args)
        try:
            aligned = animator.align(image, source=args.image)
        except FaceError as error:
            args.gif = args.mp4 = None
            return _copy_when_no_face(args, error, frames=len(sequence), fps=fps)
        if args.relative:
            sequences = [relative_aus(sequence, animator.source_aus(face)) for face in aligned]
            rendered = animator.render(image, aligned, sequences)
        else:
            rendered = animator.frames(image, sequence, aligned=aligned)
        frames = grey_frames(tqdm(rendered, total=len(sequence), desc="frames", unit="frame"), photo_kind(args.image))
    print(f"video: {write_video(args.output, frames, fps=fps)} ({len(sequence)} frames at {fps:g} fps)")
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="animate sample faces and a sample photo with the bundled model")
    parser.add_argument("-o", "--output", default="out", help="folder for the results (default out/)")
    parser.add_argument("--checkpoint", help="use this model instead of the bundled one")
    parser.add_argument("--faces", type=int, default=3,
                        help="unseen synthetic faces in the GIF, MP4 and grid (default 3)")
    parser.add_argument("--frames", type=int, default=16, help="frames per transition")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from ganimation.demo import run_demo

    written = run_demo(args.output, args.checkpoint, faces=args.faces, frames=args.frames)
    for kind, path in written.items():
        print(f"{kind:>10}: {path}")
    return 0


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="ground-truth benchmark on held-out synthetic identities",
        description="Edit renders of unseen synthetic identities towards a fixed suite of target AUs and "
                    "compare with the renderer's ground truth. Methods: the copy-the-input baseline, "
                    "--ablation models, and the model under test.")
    parser.add_argument("--checkpoint", help="model under test (default: bundled model)")
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=PATH",
                        help="another model to compare, e.g. no-attention=runs/noatt (repeatable)")
    parser.add_argument("--identities", type=int, default=8, help="held-out identities")
    parser.add_argument("--random", type=int, default=10, help="random AU combinations in the suite")
    parser.add_argument("--seed", type=int, default=90210, help="identity seed (keep apart from training seeds)")
    parser.add_argument("--regressor", help="AU regressor file (default: the shipped one)")
    parser.add_argument("--photos", metavar="DIR",
                        help="evaluate on the real photos in DIR instead (faces the model never saw): each is "
                             "edited to the basic emotions and to its own AUs, and the edits are read again with "
                             "the AU reader (response, leakage, zero-edit PSNR, change outside, time)")
    parser.add_argument("-o", "--output", default="out/evaluation",
                        help="folder for the results (default out/evaluation): evaluation.json, evaluation.md "
                             "and evaluation_grid.png; with --photos, real_evaluation.json and real_evaluation.md")
    parser.set_defaults(handler=_run_evaluate)


def _compared_models(entries: Sequence[str]) -> dict:  # type: ignore[type-arg]
    """``NAME=PATH`` entries of --ablation, loaded (names must be unique, not 'copy' or 'model')."""
    from ganimation.inference import GANimation

    models = {}
    for entry in entries:
        name, _, path = entry.partition("=")
        if not path or not name:
            raise ValueError(f"--ablation {entry!r}: expected NAME=PATH")
        if name in models or name in ("copy", "model"):
            raise ValueError(f"--ablation {entry!r}: the name {name!r} is taken; choose another")
        models[name] = GANimation.load(path)
    return models


def _run_evaluate(args: argparse.Namespace) -> int:
    from ganimation import synth
    from ganimation.auregressor import load_regressor
    from ganimation.evaluation import copy_input, evaluate, markdown_table, model_editor, write_report
    from ganimation.inference import GANimation

    model = GANimation.load(args.checkpoint)
    if args.photos:
        from ganimation import realeval

        photos = realeval.list_photos(args.photos)
        report = realeval.evaluate_photos({"copy": None, **_compared_models(args.ablation), "model": model}, photos)
        report["model"] = model.source
        json_path, table_path = realeval.write_report(report, args.output)
        print(realeval.markdown_table(report))
        print(f"report: {json_path}, {table_path}")
        return 0
    methods = {"copy": copy_input}
    for name, other in _compared_models(args.ablation).items():
        if other.image_size != model.image_size:
            raise ValueError(f"--ablation {name}: {other.image_size} px model, the model under test is "
                             f"{model.image_size} px")
        methods[name] = model_editor(other)
    methods["model"] = model_editor(model)
    rng = np.random.default_rng(args.seed)
    identities = [synth.sample_identity(rng) for _ in range(args.identities)]
    output = Path(args.output)
    report = evaluate(methods, identities, model.image_size, load_regressor(args.regressor),
                      random_combinations=args.random, seed=args.seed, grid_path=output / "evaluation_grid.png")
    report["model"] = model.source
    json_path, table_path = write_report(report, output)
    print(markdown_table(report))
    print(f"report: {json_path}, {table_path}, {output / 'evaluation_grid.png'}")
    return 0


def _add_web(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "web", help="start the web app: upload a photo and edit its expression with AU sliders",
        description="Serve a Gradio page on localhost (see docs/web.md). Needs the web extra: "
                    "pip install 'ganimation[web]'.")
    parser.add_argument("--checkpoint", help="model file, checkpoint or run folder (default: bundled model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest photo accepted (default 20 MB)")
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when available), cpu or cuda")
    parser.set_defaults(handler=_run_web)


def _run_web(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: a TCP port is 1-65535")
    try:
        from ganimation.web import serve

        return serve(args.checkpoint, host=args.host, port=args.port, device=args.device,
                     max_upload_mb=args.max_upload_mb)
    except ImportError as error:
        print(f"ganimation web: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganimation", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Animate a face in a photo along continuous facial Action Units (GANimation, ECCV 2018).")
    parser.add_argument("--version", action="version", version=f"ganimation {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_demo, _add_train, _add_prepare, _add_synth, _add_animate, _add_aus, _add_annotate, _add_reenact,
                _add_evaluate, _add_convert, _add_web):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    apply_process_environment()  # before the command loads torch
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt as interrupt:
        print(f"interrupted{': ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:
        if args.debug:
            raise
        print(f"ganimation {args.command}: error: {error_line(error)}", file=sys.stderr)
        return 2


def error_line(error: BaseException) -> str:
    """The one line that says what went wrong. An error raised in a DataLoader worker comes back
    as "Caught ImageReadError in DataLoader worker process 0." over the worker's traceback: its
    own message (naming the file) is that traceback's last line."""
    lines = str(error).splitlines()
    if not lines:
        return error.__class__.__name__
    if lines[0].startswith("Caught ") and "worker process" in lines[0]:
        last = next((line for line in reversed(lines) if line.strip()), lines[0])
        name = error.__class__.__name__
        return last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last
    return lines[0]


if __name__ == "__main__":
    sys.exit(main())
