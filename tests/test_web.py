"""The web app's functions (no browser): photo checks, face listing, estimate, render, animation,
and the Gradio app driven through its HTTP API (bad input first, then good: the server goes on).

The model is a tiny random one written here, so these tests do not need the bundled model.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganimation.aus import NUM_AUS, AUError, expression_aus
from ganimation.faces import Face, FaceIndexError, FaceTooSmallError, NoFaceError, sample_photo_path
from ganimation.files import ImageReadError, load_image

web = pytest.importorskip("ganimation.web")

TINY = dict(image_size=64, generator_channels=8, generator_residual_blocks=1, discriminator_channels=8,
            discriminator_layers=3)


def write_tiny_model(path: Path, *, critic: bool = True, seed: int = 0) -> Path:
    """A random 64 px model file (generator and, with ``critic``, the discriminator)."""
    from ganimation.checkpoint import save_model_file
    from ganimation.config import ModelConfig
    from ganimation.networks import Discriminator, Generator

    config = ModelConfig(**TINY)
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    generator = Generator(config)
    discriminator = Discriminator(config) if critic else None
    torch.set_rng_state(state)
    return save_model_file(path, generator, discriminator, config)


def require_gradio():
    """``gradio``, imported the app's way (analytics off, private temp folder first), or a skip."""
    try:
        return web.import_gradio()
    except ImportError as error:
        pytest.skip(str(error))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("web_model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def model(model_path: Path):
    from ganimation.inference import GANimation

    return GANimation.load(model_path, device="cpu")


@pytest.fixture(scope="module")
def sample_state():
    return web.load_photo(sample_photo_path())


# ---------------------------------------------------------------------- photos and faces


def test_load_photo_finds_and_outlines_the_sample_face(sample_state) -> None:
    assert sample_state.name == "sample_photo.jpg"
    assert sample_state.photo.shape == load_image(sample_photo_path()).shape
    assert sample_state.original_size is None
    assert len(sample_state.faces) >= 1
    choices = web.face_choices(sample_state)
    index = web.default_face(sample_state)
    assert index in [value for _, value in choices]
    assert all(label.startswith(f"Face {value} ") for label, value in choices)
    preview = web.faces_preview(sample_state, index)
    assert preview.shape == sample_state.photo.shape and preview.dtype == np.uint8
    x0, y0, x1, y1 = (int(round(v)) for v in sample_state.faces[index].box)
    changed = np.any(preview != sample_state.photo, axis=2)
    assert changed[y0:y1 + 1, x0].mean() > 0.9  # the box's left edge is drawn
    assert not changed[y0 + 10:y1 - 10, x0 + 10:x1 - 10].any()  # the face itself is left visible
    assert tuple(preview[(y0 + y1) // 2, x0]) == web._SELECTED
    assert not np.shares_memory(preview, sample_state.photo)


def test_preview_colours_and_choices_skip_small_faces() -> None:
    photo = np.full((200, 300, 3), 90, np.uint8)
    big = Face((20, 40, 120, 140), (45, 78), (95, 78))
    small = Face((200, 40, 230, 70), (207, 51), (223, 51))
    state = web.PhotoState(photo, "two.png", [big, small])
    assert web.face_choices(state) == [("Face 0 (100 px wide)", 0)]
    assert web.default_face(state) == 0
    preview = web.faces_preview(state, selected=0)
    assert tuple(preview[90, 20]) == web._SELECTED
    assert tuple(preview[60, 200]) == web._TOO_SMALL
    assert tuple(web.faces_preview(state)[90, 20]) == web._OTHER
    with pytest.raises(FaceTooSmallError):
        state.aligned(1, 64)
    only_small = web.PhotoState(photo, "small.png", [small])
    with pytest.raises(FaceTooSmallError, match="small.png"):
        web.face_choices(only_small)


def test_two_faces_are_listed_and_only_the_chosen_one_is_edited(model, tmp_path: Path) -> None:
    sample = load_image(sample_photo_path())
    path = tmp_path / "pair.png"
    Image.fromarray(np.concatenate([sample, sample[:, ::-1]], axis=1)).save(path)
    state = web.load_photo(path)
    assert [value for _, value in web.face_choices(state)] == [0, 1]
    assert state.faces[0].box[0] < sample.shape[1] <= state.faces[1].box[0]
    photo, _, _ = web.render(model, state, 1, *web.preset_aus("surprise"))
    assert np.array_equal(photo[:, :sample.shape[1]], state.photo[:, :sample.shape[1]])
    assert not np.array_equal(photo[:, sample.shape[1]:], state.photo[:, sample.shape[1]:])
    with pytest.raises(FaceIndexError, match="out of range"):
        web.render(model, state, 2, *web.preset_aus("surprise"))


def test_photo_without_face_is_kept_but_cannot_be_edited(tmp_path: Path) -> None:
    path = tmp_path / "wall.png"
    Image.fromarray(np.full((120, 160, 3), 128, np.uint8)).save(path)
    state = web.load_photo(path)
    assert state.faces == [] and state.photo.shape == (120, 160, 3)
    with pytest.raises(NoFaceError) as caught:
        web.face_choices(state)
    assert "wall.png" in str(caught.value)
    assert web.user_message(caught.value).startswith("No face found")
    assert np.array_equal(web.faces_preview(state), state.photo)


def test_unreadable_file_names_the_upload_not_the_temp_path(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "holiday.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError) as caught:
        web.load_photo(path, name="holiday.png")
    assert "holiday.png" in str(caught.value) and str(path.parent) not in str(caught.value)
    assert web.user_message(caught.value).startswith("Cannot read this file")
    with pytest.raises(ImageReadError, match="no such image"):
        web.load_photo(tmp_path / "missing.jpg")


def test_size_limits(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((50, 400, 3), np.uint8)).save(path)
    with pytest.raises(web.PhotoTooLargeError, match="megapixels"):
        web.load_photo(path, max_pixels=10_000)
    with pytest.raises(web.PhotoTooLargeError, match="limit is"):
        web.load_photo(path, max_bytes=100)
    assert issubclass(web.PhotoTooLargeError, ValueError)
    assert web.user_message(web.PhotoTooLargeError("x")).startswith("Photo too large")
    state = web.load_photo(path, working_side=200)
    assert state.photo.shape == (25, 200, 3) and state.original_size == (400, 50)


# ---------------------------------------------------------------------- AUs and rendering


def test_slider_and_preset_values() -> None:
    values = [0.5] * NUM_AUS
    values[0], values[1], values[2] = None, 1.5, -0.2
    vector = web.slider_aus(*values)
    assert vector.dtype == np.float32 and vector.shape == (NUM_AUS,)
    assert vector[0] == 0.0 and vector[1] == 1.0 and vector[2] == 0.0 and vector[3] == 0.5
    assert np.array_equal(web.slider_aus(values), vector)
    with pytest.raises(AUError):
        web.slider_aus(0.1, 0.2)
    assert np.allclose(web.preset_aus("happy", 0.5), expression_aus("happy", 0.5))
    assert not web.preset_aus("surprise", 0.0).any()
    with pytest.raises(AUError):
        web.preset_aus("bored")
    assert web.au_label("AU12") == "AU12 lip corner puller"
    grouped = [name for _, names in web.SLIDER_GROUPS for name in names]
    assert sorted(grouped) == sorted(web.AU_NAMES) and len(set(grouped)) == NUM_AUS  # every AU once


def test_estimate_and_render_edit_only_the_face(model, sample_state) -> None:
    index = web.default_face(sample_state)
    aus = web.estimate(model, sample_state, index)
    assert aus.shape == (NUM_AUS,) and aus.dtype == np.float32
    assert (aus >= 0).all() and (aus <= 1).all()
    photo, attention, colour = web.render(model, sample_state, index, *web.preset_aus("happy"))
    assert photo.shape == sample_state.photo.shape and photo.dtype == np.uint8
    assert attention.shape == (64, 64, 3) and attention.dtype == np.uint8
    assert colour.shape == (64, 64, 3) and colour.dtype == np.uint8
    x0, y0, x1, y1 = (int(round(v)) for v in sample_state.faces[index].box)
    difference = np.abs(photo.astype(int) - sample_state.photo.astype(int))
    assert difference[y0:y1, x0:x1].mean() > 1.0
    assert not difference[:20].any() and not difference[-20:].any()  # far from the face: untouched
    again, _, _ = web.render(model, sample_state, index, list(web.preset_aus("happy")))
    assert np.array_equal(again, photo)
    other, _, _ = web.render(model, sample_state, index, *web.preset_aus("sad"))
    assert not np.array_equal(other, photo)
    assert web.mask_for_display(attention).shape == (256, 256, 3)


def test_sliders_start_from_the_face_read_by_its_landmarks(tmp_path: Path, sample_state) -> None:
    from ganimation.aureader import read_aus
    from ganimation.aus import AU_NAMES
    from ganimation.inference import GANimation

    generator_only = GANimation.load(write_tiny_model(tmp_path / "g.safetensors", critic=False), device="cpu")
    assert not web.can_estimate(generator_only)
    index = web.default_face(sample_state)
    aus = web.estimate(generator_only, sample_state, index)
    assert np.array_equal(aus, read_aus(sample_state.faces[index].mesh))
    assert aus[AU_NAMES.index("AU12")] > 0.5  # the sample astronaut smiles


def test_model_without_critic_starts_neutral_without_landmarks(tmp_path: Path, sample_state) -> None:
    import dataclasses

    from ganimation.inference import GANimation

    generator_only = GANimation.load(write_tiny_model(tmp_path / "g.safetensors", critic=False), device="cpu")
    bare = dataclasses.replace(sample_state, faces=[dataclasses.replace(face, mesh=None) for face in sample_state.faces],
                               _aligned={})
    assert not web.estimate(generator_only, bare, web.default_face(bare)).any()


def test_render_interpolation_and_save(model, sample_state, tmp_path: Path) -> None:
    from ganimation.video import video_info

    index = web.default_face(sample_state)
    calls = []
    gif = web.render_interpolation(model, sample_state, index, web.preset_aus("happy"), tmp_path, frames=5,
                                   progress=lambda done, total: calls.append((done, total)))
    assert gif.suffix == ".gif" and tmp_path in gif.parents
    assert calls[-1] == (5, 5)
    with Image.open(gif) as animation:
        assert animation.n_frames == 5 and animation.size == (512, 512)
    mp4 = web.render_interpolation(model, sample_state, index, web.preset_aus("sad"), tmp_path, frames=4, fps=8,
                                   fmt="MP4", source_aus=np.zeros(NUM_AUS))
    assert mp4.suffix == ".mp4" and video_info(mp4)["frames"] == 4
    with pytest.raises(ValueError, match="GIF or MP4"):
        web.render_interpolation(model, sample_state, index, np.zeros(NUM_AUS), tmp_path, fmt="avi")
    photo, _, _ = web.render(model, sample_state, index, *web.preset_aus("happy"))
    saved = web.save_photo(photo, tmp_path, "my photo.jpg")
    assert saved.suffix == ".png" and saved.name == "my_photo-edited.png" and tmp_path in saved.parents
    assert np.array_equal(load_image(saved), photo)
    assert web.save_photo(photo, tmp_path, "my photo.jpg") != saved  # never overwrites an earlier download


# ---------------------------------------------------------------------- command line and app


def test_cli_registers_web_with_localhost_defaults() -> None:
    from ganimation.cli import _run_web, build_parser

    args = build_parser().parse_args(["web", "--checkpoint", "m.safetensors"])
    assert args.handler is _run_web
    assert (args.host, args.port, args.checkpoint) == ("127.0.0.1", 7860, "m.safetensors")


@pytest.mark.filterwarnings("ignore:::gradio.queueing")
def test_app_serves_and_survives_bad_input(model, tmp_path: Path) -> None:
    import os

    gradio = require_gradio()
    from gradio_client import Client, handle_file

    app = web.build_app(model, output_dir=tmp_path / "out", max_pixels=1_000_000)
    assert isinstance(app, gradio.Blocks)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    temp_root = Path(os.environ["GRADIO_TEMP_DIR"])
    port = free_port()
    _, url, share_url = web.launch(app, port=port, block=False, quiet=True)
    try:
        assert share_url is None and url.startswith("http://127.0.0.1")
        client = Client(url, verbose=False, download_files=False)
        # A photo load's outputs as the API gives them (the session state is kept by the client):
        # faces preview, face choice, 17 sliders, edited photo, attention, colour, status, ...
        status = 2 + NUM_AUS + 3

        garbage = tmp_path / "garbage.png"
        garbage.write_bytes(b"\x89PNG but not really")
        result = client.predict(handle_file(str(garbage)), api_name="/upload")
        assert result[0] is None and "Cannot read" in result[status], result

        huge = tmp_path / "huge.png"
        Image.new("RGB", (1200, 1000)).save(huge)
        result = client.predict(handle_file(str(huge)), api_name="/upload")
        assert "Photo too large" in result[status]

        result = client.predict(api_name="/sample")
        assert "1 face found" in result[status], result[status]
        sliders = list(result[2:2 + NUM_AUS])
        edited, attention, colour = result[2 + NUM_AUS:status]
        for item in (edited, attention, colour):  # files the server wrote: all in its temp folder
            assert temp_root in Path(item["path"]).resolve().parents, item
        face = result[1]["value"]  # the face choice comes as an update with its choices
        assert face == 0 and [value for _, value in result[1]["choices"]] == [0], result[1]

        sliders[web.AU_NAMES.index("AU12")] = 1.0
        moved = client.predict(face, *sliders, api_name="/render")
        assert not np.array_equal(load_image(moved[0]["path"]), load_image(edited["path"]))
        saved, message = client.predict(face, *sliders, api_name="/save")
        assert saved["visible"] and "ready" in message and saved["value"]["path"].endswith(".png")
        assert load_image(saved["value"]["path"]).shape == load_image(sample_photo_path()).shape

        preset = client.predict(face, "happy", 0.5, api_name="/preset")
        assert np.allclose(preset[:NUM_AUS], expression_aus("happy", 0.5), atol=1e-3)
        reset = client.predict(face, api_name="/reset")
        assert np.allclose(reset[:NUM_AUS], result[2:2 + NUM_AUS]) and "own expression" in reset[-1]
        preview, animation, message = client.predict(face, 3, 12, "GIF", *sliders, api_name="/animation")
        assert preview["visible"] and animation["visible"] and "3 frames" in message
        assert animation["value"]["path"].endswith(".gif")
        with Image.open(animation["value"]["path"]) as gif:
            assert gif.n_frames == 3
        preview, animation, message = client.predict(face, 2, 12, "MP4", *sliders, api_name="/animation")
        assert not preview["visible"] and animation["value"]["path"].endswith(".mp4")
    finally:
        app.close()
