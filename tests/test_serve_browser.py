"""The web page in a real browser: headless Debian chromium driven by playwright, against a real `serve.run`.

Skips with a message where chromium is absent (`apt-get install -y chromium`); never runs `playwright install`.
Screenshots go to the test's tmp folder (path printed; set SEMCOLOR_SCREENSHOT_DIR to keep them elsewhere).
"""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port
from PIL import Image

APP = "semcolor-browser-test"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.ray, pytest.mark.browser]


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not found on PATH; install it with `apt-get install -y chromium` (Debian)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    return path


@pytest.fixture(scope="module")
def page_url(chromium_path, ray_local, tmp_path_factory) -> Iterator[str]:
    """The app on 127.0.0.1:<free port> via serve.run, with a tiny random-weight checkpoint."""
    from ray import serve

    from semcolor.model import checkpoint
    from semcolor.model.config import ModelConfig
    from semcolor.model.network import build_model
    from semcolor.serve.builder import build_app

    ckpt = str(tmp_path_factory.mktemp("browser") / "ckpt")
    config = ModelConfig(arch="resnet34", input_size=64)
    checkpoint.save(build_model(config), config, ckpt)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"checkpoint": ckpt, "max_batch_size": 4, "backend": "torch"}), name=APP, route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        serve.delete(APP)
        serve.shutdown()


def _photo(path: Path) -> tuple[int, int]:
    """A real grayscale photo at an odd size (scikit-image's astronaut), written as JPEG; returns (w, h)."""
    from skimage import data

    image = Image.fromarray(data.astronaut()).convert("L").resize((301, 211))
    image.save(path, quality=90)
    return image.size


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SEMCOLOR_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_upload_shows_colorized_result_and_mask(chromium_path, page_url, tmp_path):
    from playwright.sync_api import sync_playwright

    photo = tmp_path / "astronaut.jpg"
    width, height = _photo(photo)
    shots = _screenshot_dir(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(page_url)
            assert page.title() == "semcolor"
            page.set_input_files("#file", str(photo))
            page.wait_for_function("document.body.dataset.state !== 'working' && "
                                   "document.body.dataset.state !== 'idle'", timeout=60_000)
            assert page.evaluate("document.body.dataset.state") == "done", page.inner_text("#status")
            page.wait_for_function("document.getElementById('colorized').complete && "
                                   "document.getElementById('mask').complete", timeout=30_000)
            natural = {i: page.evaluate(f"[document.getElementById('{i}').naturalWidth, "
                                        f"document.getElementById('{i}').naturalHeight]")
                       for i in ("original", "colorized", "mask")}
            assert natural == {i: [width, height] for i in natural}
            assert f"{width}×{height}" in page.inner_text("#status")
            link = page.locator("#download")
            assert link.is_visible() and link.get_attribute("download") == "astronaut_color.png"
            assert link.get_attribute("href").startswith("data:image/png;base64,")
            page.screenshot(path=str(shots / "serve_page_done.png"), full_page=True)

            # the download link really delivers the full-resolution PNG
            with page.expect_download() as info:
                link.click()
            saved = tmp_path / "download.png"
            info.value.save_as(saved)
            assert Image.open(saved).size == (width, height)

            # a bad file shows the server's reason, not a broken image
            bad = tmp_path / "notes.jpg"
            bad.write_text("not an image")
            page.set_input_files("#file", str(bad))
            page.wait_for_function("document.body.dataset.state === 'error'", timeout=30_000)
            assert "415" in page.inner_text("#status") and "not a recognized image" in page.inner_text("#status")
            assert page.evaluate("document.getElementById('colorized').hasAttribute('src')") is False
            page.screenshot(path=str(shots / "serve_page_error.png"), full_page=True)
        finally:
            browser.close()
    print(f"screenshots in {shots}")
    assert np.asarray(Image.open(shots / "serve_page_done.png")).std() > 0
