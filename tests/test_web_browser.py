"""End to end in a real browser: ``ganimation web`` in a subprocess, driven by headless Chromium.

Uses Debian's ``chromium`` (``/usr/bin/chromium``, installed by ``.ci/run``) through Playwright's
Python API; no browser is downloaded. Without Chromium or Playwright the test is skipped, except
when ``CI`` is set: then it fails, since CI must run it. ``GANIMATION_CHROMIUM`` points at another
Chromium binary; ``GANIMATION_WEB_SCREENSHOT=PATH`` runs the app with the bundled model instead of a
tiny random one and saves the final screenshot there (how docs/web_screenshot.png was made).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganimation.faces import sample_photo_path
from ganimation.files import load_image

from test_web import free_port, require_gradio, write_tiny_model

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180)]

CHROMIUM = Path(os.environ.get("GANIMATION_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_S = 90
SCREENSHOT = os.environ.get("GANIMATION_WEB_SCREENSHOT")
RESULT_MS = 30_000


def _require(available: bool, what: str) -> None:
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so the browser test must run: .ci/run installs Chromium with apt-get, "
                    "and `make test` installs playwright with the dev extra)")
    pytest.skip(what)


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "playwright is not installed (pip install -e '.[dev]')")
    return sync_playwright


def _wait_for_server(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ganimation web exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"ganimation web did not answer on {url} within {SERVER_START_S} s:\n"
                f"{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def sync_playwright():
    """Playwright's entry point, once Chromium and Playwright are known to be there."""
    _require(CHROMIUM.is_file(), f"{CHROMIUM} is missing (apt-get install chromium)")
    return _playwright()


@pytest.fixture
def server(tmp_path: Path):
    """``ganimation web`` on a free localhost port with a tiny random model (the bundled one when a
    screenshot is asked for); yields its URL."""
    require_gradio()
    # The screenshot for the docs shows what users get: the bundled model.
    model_args = ([] if SCREENSHOT
                  else ["--checkpoint", str(write_tiny_model(tmp_path / "tiny.safetensors"))])
    port = free_port()
    log = tmp_path / "server.log"
    temp = tmp_path / "tmp"  # the server's TMPDIR: its own temporary folders must go away with it
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp), PYTHONUNBUFFERED="1")
    env.pop("GRADIO_TEMP_DIR", None)
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "ganimation", "web", *model_args, "--port", str(port), "--device", "cpu"],
            cwd=tmp_path, env=env, stdout=stream, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_server(process, url, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode in (0, 130), log.read_text(errors="replace")[-3000:]  # 130: stopped while starting
    assert not list(temp.iterdir()), f"temporary folders left behind: {list(temp.iterdir())}"
    assert {path.name for path in tmp_path.iterdir()} <= {"tiny.safetensors", "server.log", "tmp", "profile",
                                                          "not_a_photo.png", "web.png"}, "wrote to its working folder"


def _image_at(context, page, selector: str) -> np.ndarray:
    """The picture an <img> inside ``selector`` shows, fetched from the server and decoded."""
    source = page.locator(f"{selector} img").first.get_attribute("src")
    response = context.request.get(source)
    assert response.ok, f"{source}: HTTP {response.status}"
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def _status(page) -> str:
    return page.inner_text("#status")


def test_edit_a_photo_in_headless_chromium(sync_playwright, server: str, tmp_path: Path) -> None:
    garbage = tmp_path / "not_a_photo.png"
    garbage.write_bytes(b"definitely not a PNG")
    external: list[str] = []
    page_errors: list[str] = []

    def only_localhost(route) -> None:
        if route.request.url.startswith(server.rstrip("/")) or route.request.url.startswith("data:"):
            route.continue_()
        else:  # the page must not phone home: analytics are off and fonts are local
            external.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1100})
        try:
            context.set_default_timeout(RESULT_MS)
            context.route("**/*", only_localhost)
            page = context.new_page()
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(server)
            upload = page.locator("#photo-upload input[type=file]")

            # A bad file: a clear message in the page, and the server carries on.
            upload.set_input_files(str(garbage))
            page.wait_for_function("document.querySelector('#status').innerText.includes('Cannot read')")
            assert "not_a_photo.png" in _status(page)
            page.locator("#photo-upload button[aria-label='Clear']").first.click()

            # The sample photo: faces outlined, sliders set from the estimate, a first render.
            upload.set_input_files(str(sample_photo_path()))
            page.wait_for_function("document.querySelector('#status').innerText.includes('face found')")
            page.wait_for_selector("#edited-photo img")
            page.wait_for_selector("#faces-preview img")
            original = load_image(sample_photo_path())
            before = _image_at(context, page, "#edited-photo")
            assert before.shape == original.shape
            source_before = page.locator("#edited-photo img").get_attribute("src")

            # Drag "AU26 jaw drop" to the right (she smiles already, her jaw is closed): the edit follows.
            track = page.get_by_label("range slider for AU26 jaw drop")
            track.scroll_into_view_if_needed()
            box = track.bounding_box()
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + 2, y)
            page.mouse.down()
            for step in range(1, 9):
                page.mouse.move(box["x"] + 2 + step * (box["width"] - 4) * 0.11, y)
                page.wait_for_timeout(40)
            page.mouse.up()
            assert float(page.get_by_label("number input for AU26 jaw drop").input_value()) > 0.7
            page.wait_for_function("s => document.querySelector('#edited-photo img').src !== s", arg=source_before)
            page.wait_for_timeout(300)  # let the last queued render (always_last) land
            page.wait_for_function(  # the progress indicator on the edited photo has gone: idle
                "() => [...document.querySelectorAll('#edited-photo [data-testid=status-tracker]')]"
                ".every(tracker => tracker.classList.contains('hide'))")

            after = _image_at(context, page, "#edited-photo")
            assert after.shape == original.shape
            difference = np.abs(after.astype(int) - original.astype(int)).mean(axis=2)
            assert difference.max() > 40 and (difference > 20).mean() > 0.002, "the face should have changed"
            assert difference[:40].mean() < 4, "far from the face the photo should be unchanged (up to JPEG)"
            assert not np.array_equal(after, before)
            for mask in ("#attention-mask", "#colour-mask"):
                picture = _image_at(context, page, mask)
                # the bundled model only warps real faces: its attention mask is all white
                assert picture.shape[0] >= 64 and (picture.std() > 0 or (SCREENSHOT and mask == "#attention-mask")), mask
                assert page.locator(f"{mask} img").first.evaluate("img => img.complete && img.naturalWidth > 0")

            # Downloads: the edited photo as PNG, and the interpolation as a GIF (shown as well).
            page.click("#save-button")
            page.wait_for_selector("#photo-download a[download$='.png']")
            page.get_by_label("number input for Frames", exact=True).fill("4")
            page.click("#animate-button")
            page.wait_for_selector("#animation-download a[download$='.gif']")
            gif = page.locator("#animation-preview img").first.get_attribute("src")
            with Image.open(io.BytesIO(context.request.get(gif).body())) as animation:
                assert animation.n_frames == 4 and animation.size == original.shape[1::-1]
            assert "4 frames" in _status(page)

            page.screenshot(path=str(tmp_path / "web.png"), full_page=True)
        finally:
            context.close()
    assert not page_errors, page_errors
    assert not external, f"the page tried to reach other hosts: {external}"
    if SCREENSHOT:
        shutil.copyfile(tmp_path / "web.png", SCREENSHOT)
