"""The web app (``ganimation web``): upload a photo, pick a face, move 17 AU sliders, watch the edit.

A thin Gradio layer over the library. The work is done by plain functions that take and return
NumPy arrays and a :class:`PhotoState`, and are tested without a browser:

* :func:`load_photo` reads and checks a photo and finds its faces,
* :func:`face_choices` / :func:`default_face` / :func:`faces_preview` list and outline them,
* :func:`estimate` gives a face's own AU intensities (the critic's regression head),
* :func:`render` edits one face towards the slider values: whole photo, attention and colour mask,
* :func:`render_interpolation` writes the eased animation from the face as it is to the target,
* :func:`save_photo` writes the edited photo for download.

:func:`build_app` wires them into a ``gradio.Blocks`` page and :func:`serve` launches it on
localhost. Nothing is written outside private temporary folders (uploads and Gradio's cache go to
``GRADIO_TEMP_DIR``, set to a fresh ``mkdtemp`` folder unless already set; results go to another),
analytics are off and no share link is ever made. See ``docs/web.md``.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image

from ganimation.animation import DEFAULT_BLEND, PhotoAnimator, face_aus, edit_faces, interpolate_aus, paste_edits
from ganimation.aus import AU_DESCRIPTIONS, AU_NAMES, EXPRESSIONS, NUM_AUS, AUError, check_au_vector, expression_aus
from ganimation.checkpoint import CheckpointError
from ganimation.faces import (
    MIN_FACE_SIZE, AlignedFace, Face, FaceDetector, FaceError, FaceIndexError, FaceTooSmallError, NoFaceError,
    align_face, default_detector, sample_photo_path, select_faces,
)
from ganimation.files import ImageReadError, load_image, save_image
from ganimation.inference import GANimation
from ganimation.video import write_video

if TYPE_CHECKING:
    import gradio as gr

logger = logging.getLogger(__name__)

#: Largest upload accepted (bytes); also given to Gradio as ``max_file_size``.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Largest photo accepted (pixels), checked from the file header before decoding.
MAX_PIXELS = 40_000_000
#: Photos whose longer side exceeds this are downscaled to it for editing (keeps every slider
#: move fast; the face crops the model sees are 128 px anyway).
WORKING_SIDE = 2048
#: File suffixes the upload accepts.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
DEFAULT_FRAMES = 16
MAX_FRAMES = 48
DEFAULT_FPS = 12
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


class PhotoTooLargeError(ImageReadError):
    """An upload over the size or pixel limit."""


# --------------------------------------------------------------------------------------------
# Pure functions (no Gradio)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PhotoState:
    """One uploaded photo (at working resolution) and the faces found in it, left to right."""

    photo: np.ndarray  #: uint8 (H, W, 3)
    name: str  #: the file name shown in messages
    faces: list[Face]
    min_face: float = MIN_FACE_SIZE
    original_size: tuple[int, int] | None = None  #: (width, height) before downscaling, if it was
    _aligned: dict[tuple[int, int], AlignedFace] = dataclasses.field(default_factory=dict, repr=False)

    def aligned(self, face_index: int, size: int) -> AlignedFace:
        """Face ``face_index`` cut out as a ``size`` px crop (cached; raises the FaceError kinds)."""
        key = (int(face_index), int(size))
        if key not in self._aligned:
            face = select_faces(self.faces, int(face_index), min_face=self.min_face, source=self.name)[0]
            self._aligned[key] = align_face(self.photo, face, size)
        return self._aligned[key]


def _megabytes(count: float) -> str:
    return f"{count / 1024 / 1024:.1f} MB"


def check_photo_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_UPLOAD_BYTES,
                     max_pixels: int = MAX_PIXELS, name: str | None = None) -> None:
    """Refuse a file over ``max_bytes`` or an image over ``max_pixels`` before decoding it."""
    source = Path(path)
    label = name or source.name
    if not source.is_file():
        raise ImageReadError(f"{label}: no such image file")
    size = source.stat().st_size
    if size > max_bytes:
        raise PhotoTooLargeError(f"{label} is {_megabytes(size)}; the limit is {_megabytes(max_bytes)}")
    try:
        with Image.open(source) as opened:  # reads the header only
            width, height = opened.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return  # not an image Pillow knows: load_image says so with the reason
    if width * height > max_pixels:
        raise PhotoTooLargeError(f"{label} is {width} x {height} = {width * height / 1e6:.0f} megapixels; "
                                 f"the limit is {max_pixels / 1e6:.0f} megapixels")


def load_photo(path: str | os.PathLike[str], *, name: str | None = None, detector: FaceDetector | None = None,
               max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS, working_side: int = WORKING_SIDE,
               min_face: float = MIN_FACE_SIZE) -> PhotoState:
    """Read a photo, downscale it to ``working_side`` if larger, and find its faces.

    Raises :class:`~ganimation.files.ImageReadError` (or :class:`PhotoTooLargeError`) for a file
    that cannot be used; a photo without faces is returned with ``faces == []`` so that it can
    still be shown (:func:`face_choices` then raises :class:`~ganimation.faces.NoFaceError`).
    """
    label = name or Path(path).name
    check_photo_file(path, max_bytes=max_bytes, max_pixels=max_pixels, name=label)
    try:
        photo = load_image(path)
    except ImageReadError as error:
        raise type(error)(str(error).replace(str(path), label)) from None
    original_size = None
    longest = max(photo.shape[:2])
    if longest > working_side:
        original_size = (photo.shape[1], photo.shape[0])
        factor = working_side / longest
        size = (max(1, round(photo.shape[1] * factor)), max(1, round(photo.shape[0] * factor)))
        photo = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    faces = (detector or default_detector()).detect(photo)
    return PhotoState(photo, label, list(faces), float(min_face), original_size)


def face_choices(state: PhotoState) -> list[tuple[str, int]]:
    """``(label, index)`` of each face large enough to edit; raises NoFaceError / FaceTooSmallError."""
    usable = {id(face) for face in select_faces(state.faces, "all", min_face=state.min_face, source=state.name)}
    return [(f"Face {index} ({face.width:.0f} px wide)", index)
            for index, face in enumerate(state.faces) if id(face) in usable]


def default_face(state: PhotoState) -> int:
    """Index of the largest face (raises like :func:`face_choices` when there is none to edit)."""
    largest = select_faces(state.faces, "largest", min_face=state.min_face, source=state.name)[0]
    return next(index for index, face in enumerate(state.faces) if face is largest)


_SELECTED = (40, 220, 60)
_OTHER = (255, 150, 0)
_TOO_SMALL = (160, 160, 160)


def faces_preview(state: PhotoState, selected: int | None = None) -> np.ndarray:
    """The photo with every face outlined and numbered (the selected one in green, small ones grey)."""
    canvas = state.photo.copy()
    height, width = canvas.shape[:2]
    thickness = max(2, round(max(height, width) / 400))
    for index, face in enumerate(state.faces):
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        small = face.size < state.min_face
        colour = _TOO_SMALL if small else (_SELECTED if index == selected else _OTHER)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness, cv2.LINE_AA)
        text = f"{index}" + (" too small" if small else "")
        scale = max(0.5, min(3.0, (x1 - x0) / 120.0))
        (text_width, text_height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = y0 - text_height - baseline - 2 * thickness
        top = top if top >= 0 else min(y1, height - text_height - baseline - 2 * thickness)
        label_end = (x0 + text_width + 2 * thickness, top + text_height + baseline + 2 * thickness)
        cv2.rectangle(canvas, (x0, top), label_end, colour, -1)
        cv2.putText(canvas, text, (x0 + thickness, top + text_height + thickness), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), max(1, thickness // 2), cv2.LINE_AA)
    return canvas


def can_estimate(model: GANimation) -> bool:
    """Whether the model file carries the critic, whose head estimates AUs."""
    return model.discriminator is not None


def estimate(model: GANimation, state: PhotoState, face_index: int) -> np.ndarray:
    """The chosen face's own AU intensities (17, in [0, 1]), read from its landmarks (see
    :func:`ganimation.animation.face_aus`)."""
    return face_aus(model, state.aligned(face_index, model.image_size))


def slider_aus(*values: float | None) -> np.ndarray:
    """The 17 slider values as a validated AU vector (``None`` counts as 0, values clipped to [0, 1])."""
    flat = list(values[0]) if len(values) == 1 and isinstance(values[0], (list, tuple, np.ndarray)) else list(values)
    numbers = np.array([0.0 if value is None else float(value) for value in flat], dtype=np.float64)
    return check_au_vector(np.clip(np.nan_to_num(numbers), 0.0, 1.0), source="slider values")


def preset_aus(name: str, intensity: float = 1.0) -> np.ndarray:
    """An expression preset (``aus.EXPRESSIONS``) at ``intensity``."""
    return expression_aus(name, float(np.clip(intensity, 0.0, 1.0)))


def render(model: GANimation, state: PhotoState, face_index: int, *slider_values: float | None,
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face ``face_index`` moved to the slider AUs: (whole photo, attention mask, colour mask).

    The masks are the model's, at crop size: attention is white where the input pixel is kept.
    """
    aligned = state.aligned(face_index, model.image_size)
    edits = edit_faces(model, state.photo, [aligned], [slider_aus(*slider_values)])
    # The same warp and blend as the animation and the CLI, so the still and the clip agree.
    photo = paste_edits(state.photo, edits, DEFAULT_BLEND)
    edit = edits[0]
    if edit.output is None:  # only the shape moved: the face is all kept, and no colour was painted
        return photo, np.full((*edit.aligned.crop.shape[:2], 3), 255, np.uint8), edit.aligned.crop
    return photo, edit.output.attention_image(), edit.output.colour


def render_interpolation(model: GANimation, state: PhotoState, face_index: int, target_aus: Sequence[float],
                         output_dir: str | os.PathLike[str], *, frames: int = DEFAULT_FRAMES, fps: float = DEFAULT_FPS,
                         fmt: str = "gif", source_aus: Sequence[float] | None = None,
                         progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the eased animation from the face as it is (or ``source_aus``) to ``target_aus``.

    ``fmt`` is ``"gif"`` or ``"mp4"``; the file gets a fresh name in ``output_dir``.
    """
    suffix = f".{fmt.lower().lstrip('.')}"
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"animation format must be GIF or MP4, got {fmt!r}")
    frames = int(np.clip(frames, 2, MAX_FRAMES))
    target = slider_aus(target_aus)
    start = slider_aus(source_aus) if source_aus is not None else estimate(model, state, face_index)
    aligned = state.aligned(face_index, model.image_size)
    animator = PhotoAnimator(model, which=int(face_index), min_face=state.min_face)
    pictures = []
    for number, frame in enumerate(animator.frames(state.photo, interpolate_aus(start, target, frames),
                                                   aligned=[aligned], batch_size=8)):
        pictures.append(frame)
        if progress is not None:
            progress(number + 1, frames)
    return write_video(_fresh_path(output_dir, f"{Path(state.name).stem}-animation", suffix), pictures, fps=fps)


def save_photo(image: np.ndarray, output_dir: str | os.PathLike[str], name: str = "photo") -> Path:
    """Write ``image`` as a PNG with a fresh name in ``output_dir`` (for download)."""
    return save_image(_fresh_path(output_dir, f"{Path(name).stem}-edited", ".png"), image)


def _fresh_path(folder: str | os.PathLike[str], stem: str, suffix: str) -> Path:
    safe = "".join(char if char.isalnum() or char in "-_" else "_" for char in stem)[:60] or "output"
    directory = Path(tempfile.mkdtemp(prefix="out-", dir=folder))
    return directory / f"{safe}{suffix}"


def mask_for_display(mask: np.ndarray, side: int = 256) -> np.ndarray:
    """A crop-size mask enlarged by a whole factor (crisp pixels) to about ``side`` px for the page."""
    factor = max(1, round(side / max(mask.shape[:2])))
    return mask if factor == 1 else cv2.resize(mask, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)


def au_label(name: str) -> str:
    """Slider label: ``"AU12 lip corner puller"``."""
    return f"{name} {AU_DESCRIPTIONS[name]}"


def user_message(error: BaseException) -> str:
    """One line for the page: what went wrong and what to do."""
    text = str(error).splitlines()[0] if str(error) else error.__class__.__name__
    if isinstance(error, PhotoTooLargeError):
        return f"Photo too large: {text}. Please use a smaller photo."
    if isinstance(error, ImageReadError):
        return f"Cannot read this file as an image: {text}"
    if isinstance(error, NoFaceError):
        return f"No face found: {text}. Use a photo with a frontal face at least {MIN_FACE_SIZE} px wide."
    if isinstance(error, FaceTooSmallError):
        return f"Face too small: {text}"
    if isinstance(error, FaceIndexError):
        return f"No such face: {text}"
    if isinstance(error, (AUError, CheckpointError)):
        return f"Cannot edit: {text}"
    return f"Error: {text}"


#: The errors a user can cause; the page shows them, anything else is logged as a bug.
USER_ERRORS = (ImageReadError, FaceError, AUError, CheckpointError, ValueError)


# --------------------------------------------------------------------------------------------
# Gradio app
# --------------------------------------------------------------------------------------------

_OWN_DIRS: list[str] = []


def _remove_own_dirs() -> None:
    for folder in _OWN_DIRS:
        shutil.rmtree(folder, ignore_errors=True)


def configure_environment() -> Path:
    """Switch Gradio's analytics off and point its upload cache at a private temp folder.

    Must run before ``gradio`` is first imported (some of its modules read the variables then).
    An existing ``GRADIO_TEMP_DIR`` is kept. Returns the cache folder.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("GRADIO_SSR_MODE", "False")
    if not os.environ.get("GRADIO_TEMP_DIR"):
        folder = tempfile.mkdtemp(prefix="ganimation-gradio-")
        if not _OWN_DIRS:
            atexit.register(_remove_own_dirs)
        _OWN_DIRS.append(folder)
        os.environ["GRADIO_TEMP_DIR"] = folder
    return Path(os.environ["GRADIO_TEMP_DIR"])


def import_gradio() -> Any:
    """``gradio``, set up by :func:`configure_environment`; a clear ImportError when missing."""
    configure_environment()
    try:
        import gradio
    except ImportError as error:
        raise ImportError(f"the web app needs gradio ({error}); "
                          "install it with: pip install 'ganimation[web]'") from None
    return gradio


def _output_folder() -> Path:
    folder = tempfile.mkdtemp(prefix="ganimation-web-")
    if not _OWN_DIRS:
        atexit.register(_remove_own_dirs)
    _OWN_DIRS.append(folder)
    return Path(folder)


INTRO = """\
# GANimation: edit a facial expression
Upload a photo (or use the sample), pick a face, then move the Action Unit sliders. The edited photo
updates as you go; the attention mask (white = pixel kept) and colour mask show what the model changed.
"""

#: Slider groups: upper face, eyes and cheeks, mouth.
SLIDER_GROUPS = (("Brows and eyes", ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU45")),
                 ("Nose and lips", ("AU09", "AU10", "AU12", "AU14", "AU15")),
                 ("Mouth and jaw", ("AU17", "AU20", "AU23", "AU25", "AU26")))


def build_app(model: GANimation, *, output_dir: str | os.PathLike[str] | None = None,
              max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
              working_side: int = WORKING_SIDE) -> gr.Blocks:
    """The Gradio page over ``model``; results are written to ``output_dir`` (a fresh temp folder)."""
    gr = import_gradio()
    outputs_folder = Path(output_dir) if output_dir is not None else _output_folder()
    outputs_folder.mkdir(parents=True, exist_ok=True)

    def fail(error: BaseException) -> str:
        if not isinstance(error, USER_ERRORS):
            logger.exception("web app: unexpected error")
        message = user_message(error)
        gr.Warning(message)
        return f"**{message}**"

    def shown(state: PhotoState, face_index: Any, *values: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        photo, attention_mask, colour_mask = render(model, state, int(face_index), *values)
        return photo, mask_for_display(attention_mask), mask_for_display(colour_mask)

    def cleared() -> tuple[Any, Any, Any]:
        """The download, animation preview and animation download of an earlier photo: hidden."""
        return (gr.File(value=None, visible=False), gr.Image(value=None, visible=False),
                gr.File(value=None, visible=False))

    def ready(state: PhotoState | None, face_index: Any) -> bool:
        return state is not None and face_index is not None and bool(state.faces)

    # ---- handlers (each returns values for its outputs; errors become a message in the page)

    def photo_loaded(path: str | None, name: str | None = None) -> tuple[Any, ...]:
        blank = (None, None, None)
        if not path:
            return (None, None, gr.Dropdown(choices=[], value=None), *[gr.skip()] * NUM_AUS, *blank,
                    "Upload a photo or use the sample photo.", *cleared())
        try:
            state = load_photo(path, name=name or Path(path).name, max_bytes=max_bytes, max_pixels=max_pixels,
                               working_side=working_side)
        except Exception as error:  # noqa: BLE001 - shown in the page, the server goes on
            return (None, None, gr.Dropdown(choices=[], value=None), *[gr.skip()] * NUM_AUS, *blank, fail(error),
                    *cleared())
        try:
            choices = face_choices(state)
            index = default_face(state)
            aus = estimate(model, state, index)
            edited = shown(state, index, aus)
        except Exception as error:  # noqa: BLE001
            return (state, faces_preview(state), gr.Dropdown(choices=[], value=None), *[gr.skip()] * NUM_AUS,
                    *blank, fail(error), *cleared())
        count = len(state.faces)
        notes = [f"**{state.name}**: {count} face{'s' if count != 1 else ''} found; editing face {index}."]
        if state.original_size:
            notes.append(f"Downscaled from {state.original_size[0]} x {state.original_size[1]} to "
                         f"{state.photo.shape[1]} x {state.photo.shape[0]} for editing.")
        if state.faces[index].mesh is None and not can_estimate(model):
            notes.append("This model has no critic, so the sliders start at neutral instead of the face's own AUs.")
        return (state, faces_preview(state, index), gr.Dropdown(choices=choices, value=index),
                *[round(float(value), 3) for value in aus], *edited, " ".join(notes), *cleared())

    def sample_loaded() -> tuple[Any, ...]:
        return photo_loaded(str(sample_photo_path()), "sample photo")

    def uploaded(path: str | None) -> tuple[Any, ...]:
        return photo_loaded(path, Path(path).name if path else None)

    def face_chosen(state: PhotoState | None, face_index: Any) -> tuple[Any, ...]:
        if not ready(state, face_index):
            return (gr.skip(),) * (NUM_AUS + 5)
        try:
            aus = estimate(model, state, int(face_index))
            edited = shown(state, face_index, aus)
        except Exception as error:  # noqa: BLE001
            return (gr.skip(),) * (NUM_AUS + 4) + (fail(error),)
        return (faces_preview(state, int(face_index)), *[round(float(value), 3) for value in aus], *edited,
                f"**{state.name}**: editing face {int(face_index)}.")

    def sliders_moved(state: PhotoState | None, face_index: Any, *values: float) -> tuple[Any, ...]:
        if not ready(state, face_index):
            return (gr.skip(),) * 3 + ("Upload a photo with a face first.",)
        try:
            return (*shown(state, face_index, *values), gr.skip())
        except Exception as error:  # noqa: BLE001
            return (gr.skip(),) * 3 + (fail(error),)

    def preset_chosen(state: PhotoState | None, face_index: Any, name: str | None, intensity: float,
                      ) -> tuple[Any, ...]:
        if not name:
            return (gr.skip(),) * (NUM_AUS + 4)
        try:
            aus = preset_aus(name, intensity)
        except Exception as error:  # noqa: BLE001
            return (gr.skip(),) * (NUM_AUS + 3) + (fail(error),)
        values = [round(float(value), 3) for value in aus]
        if not ready(state, face_index):
            return (*values, gr.skip(), gr.skip(), gr.skip(), gr.skip())
        try:
            return (*values, *shown(state, face_index, aus), gr.skip())
        except Exception as error:  # noqa: BLE001
            return (*values, gr.skip(), gr.skip(), gr.skip(), fail(error))

    def reset(state: PhotoState | None, face_index: Any) -> tuple[Any, ...]:
        if not ready(state, face_index):
            return (gr.skip(),) * (NUM_AUS + 3) + ("Upload a photo with a face first.",)
        try:
            aus = estimate(model, state, int(face_index))
            return (*[round(float(value), 3) for value in aus], *shown(state, face_index, aus),
                    "Back to the face's own expression.")
        except Exception as error:  # noqa: BLE001
            return (gr.skip(),) * (NUM_AUS + 3) + (fail(error),)

    def animation(state: PhotoState | None, face_index: Any, frames: float, fps: float, fmt: str, *values: float,
                  progress: Any = gr.Progress()) -> tuple[Any, ...]:
        if not ready(state, face_index):
            return gr.skip(), gr.skip(), "Upload a photo with a face first."
        try:
            path = render_interpolation(model, state, int(face_index), slider_aus(*values), outputs_folder,
                                        frames=int(frames), fps=float(fps), fmt=str(fmt).lower(),
                                        progress=lambda done, total: progress(done / total, desc="frames"))
        except Exception as error:  # noqa: BLE001
            return gr.skip(), gr.skip(), fail(error)
        preview = str(path) if path.suffix == ".gif" else None
        return (gr.Image(value=preview, visible=preview is not None), gr.File(value=str(path), visible=True),
                f"Animation ready: {path.name} ({int(frames)} frames at {float(fps):g} fps).")

    def photo_saved(state: PhotoState | None, face_index: Any, *values: float) -> tuple[Any, ...]:
        if not ready(state, face_index):
            return gr.skip(), "Upload a photo with a face first."
        try:
            image, _, _ = render(model, state, int(face_index), *values)
            path = save_photo(image, outputs_folder, state.name)
        except Exception as error:  # noqa: BLE001
            return gr.skip(), fail(error)
        return gr.File(value=str(path), visible=True), f"Edited photo ready: {path.name}."

    # ---- layout

    with gr.Blocks(title="GANimation", analytics_enabled=False, delete_cache=(900, 3600)) as app:
        state = gr.State(None, time_to_live=3 * 3600)  # a session's photo is dropped after 3 idle hours
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label=f"Photo (JPEG, PNG, WebP, ...; up to {_megabytes(max_bytes)})",
                                 file_types=list(IMAGE_SUFFIXES), type="filepath", elem_id="photo-upload")
                sample = gr.Button("Use the sample photo", elem_id="sample-button")
                preview = gr.Image(label="Faces found", interactive=False, format="jpeg", elem_id="faces-preview")
                face = gr.Dropdown(label="Face to edit (numbers as outlined, left to right)", choices=[],
                                   value=None, interactive=True, elem_id="face-choice")
                status = gr.Markdown("Upload a photo or use the sample photo.", elem_id="status")
            with gr.Column(scale=2, min_width=400):
                edited = gr.Image(label="Edited photo", interactive=False, format="jpeg", height=480,
                                  elem_id="edited-photo")
                with gr.Row():
                    attention = gr.Image(label="Attention (white = kept)",
                                         interactive=False, format="png", height=260, elem_id="attention-mask")
                    colour = gr.Image(label="Colour mask", interactive=False, format="png", height=260,
                                      elem_id="colour-mask")
                    with gr.Column(min_width=200):
                        save = gr.Button("Download the edited photo (PNG)", elem_id="save-button")
                        download = gr.File(label="Edited photo", interactive=False, visible=False,
                                           elem_id="photo-download")
        with gr.Row():
            preset = gr.Dropdown(label="Expression preset", choices=[name for name in EXPRESSIONS], value=None,
                                 interactive=True, elem_id="preset")
            intensity = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="Preset intensity", elem_id="intensity")
            restore = gr.Button("Reset to the face's own expression", elem_id="reset-button")
        sliders: dict[str, Any] = {}
        with gr.Row():
            for title, names in SLIDER_GROUPS:
                with gr.Column(min_width=240):
                    gr.Markdown(f"**{title}**")
                    for name in names:
                        sliders[name] = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label=au_label(name),
                                                  elem_id=f"slider-{name}")
        au_sliders = [sliders[name] for name in AU_NAMES]
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                gr.Markdown("**Animation** from the face as it is to the slider expression")
                frames = gr.Slider(2, MAX_FRAMES, value=DEFAULT_FRAMES, step=1, label="Frames", elem_id="frames")
                fps = gr.Slider(1, 30, value=DEFAULT_FPS, step=1, label="Frames per second", elem_id="fps")
                fmt = gr.Radio(["GIF", "MP4"], value="GIF", label="Format", elem_id="format")
                animate = gr.Button("Render animation", variant="primary", elem_id="animate-button")
            with gr.Column(scale=2, min_width=400):
                animation_preview = gr.Image(label="Animation preview (GIF)", interactive=False, height=360,
                                             visible=False, elem_id="animation-preview")
                animation_file = gr.File(label="Animation download", interactive=False, visible=False,
                                         elem_id="animation-download")

        photo_outputs = [state, preview, face, *au_sliders, edited, attention, colour, status, download,
                         animation_preview, animation_file]
        upload.upload(uploaded, inputs=upload, outputs=photo_outputs, api_name="upload")
        upload.clear(lambda: photo_loaded(None), outputs=photo_outputs, api_visibility="private")
        sample.click(sample_loaded, outputs=photo_outputs, api_name="sample")
        face.input(face_chosen, inputs=[state, face],
                   outputs=[preview, *au_sliders, edited, attention, colour, status], api_name="face")
        gr.on([slider.input for slider in au_sliders], sliders_moved, inputs=[state, face, *au_sliders],
              outputs=[edited, attention, colour, status], trigger_mode="always_last", show_progress="minimal",
              show_progress_on=[edited], api_name="render")
        gr.on([preset.input, intensity.input], preset_chosen, inputs=[state, face, preset, intensity],
              outputs=[*au_sliders, edited, attention, colour, status], trigger_mode="always_last",
              show_progress="minimal", show_progress_on=[edited], api_name="preset")
        restore.click(reset, inputs=[state, face], outputs=[*au_sliders, edited, attention, colour, status],
                      api_name="reset")
        animate.click(animation, inputs=[state, face, frames, fps, fmt, *au_sliders],
                      outputs=[animation_preview, animation_file, status], api_name="animation")
        save.click(photo_saved, inputs=[state, face, *au_sliders], outputs=[download, status], api_name="save")
    app.ganimation_output_dir = outputs_folder  # type: ignore[attr-defined]
    return app


def launch(app: gr.Blocks, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, max_bytes: int = MAX_UPLOAD_BYTES,
           block: bool = True, quiet: bool = False) -> Any:
    """Serve ``app`` on ``host:port`` (never a share link); ``block=False`` returns at once."""
    gr = import_gradio()
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s: anyone who can reach this address can use the app (there is no login)", host)
    allowed = [str(app.ganimation_output_dir)] if hasattr(app, "ganimation_output_dir") else []
    app.queue(default_concurrency_limit=1, max_size=32)
    return app.launch(server_name=host, server_port=port, share=False, max_file_size=max_bytes, allowed_paths=allowed,
                      prevent_thread_lock=not block, quiet=quiet, show_error=True, ssr_mode=False, inbrowser=False,
                      state_session_capacity=64,
                      mcp_server=False, theme=gr.themes.Default(), footer_links=[])


def serve(checkpoint: str | os.PathLike[str] | None = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          device: str = "auto", max_upload_mb: float = MAX_UPLOAD_BYTES / 1024 / 1024) -> int:
    """``ganimation web``: load the model, build the page, serve it until interrupted."""
    import_gradio()  # fail early, before loading the model, when gradio is missing
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    model = GANimation.load(checkpoint, device=device)
    max_bytes = int(max_upload_mb * 1024 * 1024)
    app = build_app(model, max_bytes=max_bytes)
    print(f"GANimation web app on http://{host if ':' not in host else f'[{host}]'}:{port}  (Ctrl+C to stop)",
          flush=True)
    _stop_on_sigterm()
    launch(app, host=host, port=port, max_bytes=max_bytes)
    return 0


def _stop_on_sigterm() -> None:
    """Let SIGTERM stop the server like Ctrl+C does, so the temporary folders are removed."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        pass
