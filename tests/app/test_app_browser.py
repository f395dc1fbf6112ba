"""The demo end to end in headless Chromium with the bundled default model: upload, Enhance, the
enhanced audio and both spectrograms appear; bad uploads show their message; only allowed files
are served. Set L3SE_SCREENSHOT=PATH to keep a screenshot of the finished page."""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import app
from data_sim.audio import write_audio
from l3se.card import read_card
from l3se.enhancer import DEFAULT_MODEL_DIR
from tests.app.test_app import fake_model_dir

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
sync_api = pytest.importorskip("playwright.sync_api")

MAX_SECONDS = 5.0
# Larger than every example, smaller than a minute of 16-bit 16 kHz audio.
MAX_FILE_SIZE = "1mb"
# The shortest example keeps CPU decoding to a few seconds.
EXAMPLE = min(app.EXAMPLES_DIR.glob("*.wav"), key=lambda p: sf.info(str(p)).frames)
TIMEOUT_MS = 45_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    demo = app.build_app(None, max_seconds=MAX_SECONDS,
                         output_dir=tmp_path_factory.mktemp("enhanced"))
    port = free_port()
    demo.queue().launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
        **app.launch_kwargs(MAX_FILE_SIZE),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server)
    page.wait_for_selector("#enhance", timeout=TIMEOUT_MS)
    try:
        yield page
    finally:
        page.close()


def upload(page, path: Path) -> None:
    page.locator("#noisy-audio input[type=file]").set_input_files(str(path))
    # The player replaces the drop zone once the file is on the server.
    page.wait_for_selector("#noisy-audio audio[src]", state="attached", timeout=TIMEOUT_MS)


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_upload_enhance_and_show_results(page, server, tmp_path):
    upload(page, EXAMPLE)
    page.locator("#enhance").click()
    # The progress bar fed by the enhancer's callback.
    page.get_by_text(re.compile(r"Loading model|Enhancing")).first.wait_for(timeout=TIMEOUT_MS)
    audio = page.wait_for_selector("#enhanced-audio audio[src]", state="attached",
                                   timeout=TIMEOUT_MS)
    for elem_id in ("noisy-spec", "enhanced-spec"):
        img = page.wait_for_selector(f"#{elem_id} img[src]", timeout=TIMEOUT_MS)
        assert img.bounding_box()["width"] > 200
        assert page.evaluate("(img) => img.complete && img.naturalWidth", img) == app.SPEC_SIZE[0]
    page.wait_for_timeout(500)  # let the waveform finish drawing before the screenshot
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("L3SE_SCREENSHOT"):
        Path(os.environ["L3SE_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, os.environ["L3SE_SCREENSHOT"])

    # The player holds the enhanced wav (as a blob URL): 16 kHz and as long as the input.
    data = page.evaluate(
        "async (el) => Array.from(new Uint8Array(await (await fetch(el.src)).arrayBuffer()))", audio
    )
    enhanced, sr = sf.read(io.BytesIO(bytes(data)))
    assert sr == 16000 and len(enhanced) == sf.info(str(EXAMPLE)).frames
    assert np.abs(enhanced).max() > 0

def test_model_card_is_shown_and_follows_the_model_box(page, tmp_path):
    card = page.locator("#model-card")
    bundled = read_card(DEFAULT_MODEL_DIR)
    card.get_by_text(bundled.headline).wait_for(timeout=TIMEOUT_MS)
    assert not card.get_by_text("Trained on:").is_visible()  # the whole card is in the panel
    page.get_by_text("Model card: training data, warnings and measured results").click()
    full = page.locator("#model-card-full")
    full.get_by_text("Trained on:").wait_for(timeout=TIMEOUT_MS)
    assert full.get_by_text(bundled.warning.split(".")[0]).is_visible()
    full.locator("td", has_text="enhanced").first.wait_for(timeout=TIMEOUT_MS)
    page.locator("#model-dir textarea, #model-dir input").first.fill(
        str(fake_model_dir(tmp_path / "uncarded")))
    card.get_by_text("No model card").wait_for(timeout=TIMEOUT_MS)
    assert not card.get_by_text(bundled.headline).is_visible()


def test_too_long_upload_shows_message(page, tmp_path):
    path = tmp_path / "long.wav"
    write_audio(path, 0.1 * np.random.default_rng(0).standard_normal(16000 * 6).astype("float32"))
    upload(page, path)
    page.locator("#enhance").click()
    page.get_by_text(f"accepts at most {MAX_SECONDS:g} s").wait_for(timeout=TIMEOUT_MS)
    assert page.locator("#enhanced-audio audio[src]").count() == 0


def test_oversized_upload_is_refused(page, tmp_path):
    path = tmp_path / "big.wav"
    write_audio(path, 0.1 * np.random.default_rng(1).standard_normal(16000 * 40).astype("float32"))
    assert path.stat().st_size > 2**20
    page.locator("#noisy-audio input[type=file]").set_input_files(str(path))
    page.get_by_text("exceed the maximum allowed size of 1.0 Mb").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)
    assert page.locator("#noisy-audio audio[src]").count() == 0


def test_only_allowed_files_are_served(server):
    assert status(f"{server}/gradio_api/file={EXAMPLE}") == 200
    for private in (Path(app.__file__).resolve(), Path("/etc/passwd")):
        assert status(f"{server}/gradio_api/file={private}") in (403, 404)
