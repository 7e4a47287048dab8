"""End-to-end test of the web page at `/`: the real server on loopback, Debian's headless Chromium,
driven by Playwright, with real Fashion-MNIST images from the shipped demo gallery.

Needs /usr/bin/chromium (apt-get install chromium) and the `playwright` Python package; never
`playwright install`. `make test` installs both (scripts/install-debian-packages, the dev extra).
Missing either one fails the test.

LIKENESS_UPDATE_SCREENSHOT=1 also copies the desktop screenshot to docs/screenshot.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from PIL import Image

from bench.server import ServerProcess

# Trains, starts processes or a browser: `make test-fast` leaves it out (`make test` runs it).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
GALLERY = REPO / "service" / "gallery"
SCREENSHOT = REPO / "docs" / "screenshot.png"
CHROMIUM = Path(os.environ.get("LIKENESS_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
API_KEY = "web-test-key"
TIMEOUT_MS = 15_000


def gallery_items() -> list[dict]:
    return json.loads((GALLERY / "manifest.json").read_text())["items"]


def gallery_file(item: dict) -> Path:
    return GALLERY / item["file"]


def item_path(item_id: str) -> str:
    return "/items/" + quote(item_id, safe="")


def capture_screenshot(page, path: Path) -> Path:
    """Full-page PNG of the page as it is now; also docs/screenshot.png when LIKENESS_UPDATE_SCREENSHOT=1."""
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    if os.environ.get("LIKENESS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(path, SCREENSHOT)
    return path


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the web test needs the Python package 'playwright' (pip install playwright, or run "
                    "make test); do not run 'playwright install', it uses Debian's chromium")
    if not CHROMIUM.exists():
        pytest.fail(f"the web test needs Chromium at {CHROMIUM}: apt-get install chromium "
                    "(or run scripts/install-debian-packages, or point LIKENESS_CHROMIUM at a chromium binary)")
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def start_server(tmp_path: Path, **env: str) -> ServerProcess:
    return ServerProcess(tmp_path / "data", LIKENESS_DEVICE="cpu", LIKENESS_LOG_LEVEL="WARNING", **env).start()


def open_page(browser, url: str, width: int = 1280, height: int = 900):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    return context, page, errors


def card_ids(page) -> list[str]:
    return page.get_by_test_id("result-card").evaluate_all("cards => cards.map(c => c.dataset.id)")


def first_thumbnail_loaded(page) -> None:
    page.wait_for_function("""() => {
        const img = document.querySelector('[data-testid=result-card] img');
        return img && img.complete && img.naturalWidth > 0;
    }""")


def test_page_end_to_end(browser, tmp_path):
    from playwright.sync_api import expect

    items = gallery_items()
    boot = next(i for i in items if i["metadata"]["class"] == "ankle boot")
    shirt = next(i for i in items if i["metadata"]["class"] == "t-shirt/top")
    query = next(i for i in items if i["metadata"]["class"] == "sandal")
    to_add = next(i for i in items if i["metadata"]["class"] == "bag")
    server = start_server(tmp_path, LIKENESS_API_KEY=API_KEY)
    context = None
    try:
        api = httpx.Client(base_url=server.url, timeout=30)
        model = api.get("/model").json()
        assert model["provider"]["active"] == "CPUExecutionProvider"
        indexed = model["index"]["items"]
        assert indexed == len(items)
        context, page, errors = open_page(browser, server.url)

        # Model: the provider really in use, the index size and type.
        expect(page.get_by_test_id("model-provider")).to_have_text("CPUExecutionProvider")
        expect(page.get_by_test_id("model-name")).to_have_text(model["spec"]["name"])
        expect(page.get_by_test_id("model-dim")).to_have_text(str(model["spec"]["embedding_dim"]))
        expect(page.get_by_test_id("model-index-items")).to_have_text(f"{indexed} items")
        expect(page.get_by_test_id("model-index-type")).to_have_text(model["index"]["type"])
        if not model["spec"]["aspects"]:
            expect(page.get_by_test_id("compare-aspect")).to_be_hidden()
            expect(page.get_by_test_id("search-aspect")).to_be_hidden()

        # Compare two images of different classes: the page shows what the API answers.
        a, b = gallery_file(boot), gallery_file(shirt)
        expected = api.post("/similarity", files={"image_a": (a.name, a.read_bytes(), "image/png"),
                                                  "image_b": (b.name, b.read_bytes(), "image/png")}).json()
        page.get_by_test_id("compare-a").set_input_files(a)
        page.get_by_test_id("compare-b").set_input_files(b)
        page.get_by_test_id("compare-button").click()
        expect(page.get_by_test_id("compare-result")).to_be_visible()
        shown = float(page.get_by_test_id("compare-score").text_content())
        assert abs(shown - expected["score"]) < 1e-3, (shown, expected)
        decision = page.get_by_test_id("compare-decision")
        expect(decision).to_contain_text("Same" if expected["same"] else "Different")
        expect(decision).to_contain_text(f"{expected['threshold']:.4f}")
        expect(page.get_by_test_id("compare-probability")).to_have_text(f"{100 * expected['probability']:.1f} %")
        # The same image twice is the same item.
        page.get_by_test_id("compare-b").set_input_files(a)
        page.get_by_test_id("compare-button").click()
        expect(decision).to_contain_text("Same")
        assert float(page.get_by_test_id("compare-score").text_content()) == pytest.approx(1.0, abs=1e-3)
        page.get_by_test_id("compare-b").set_input_files(b)
        page.get_by_test_id("compare-button").click()
        expect(decision).to_contain_text("Same" if expected["same"] else "Different")

        # Search with a gallery image: it is its own nearest neighbour, in the API's order.
        q = gallery_file(query)
        api_hits = api.post("/search", files={"image": (q.name, q.read_bytes(), "image/png")},
                            data={"k": "6"}).json()["results"]
        page.get_by_test_id("search-file").set_input_files(q)
        page.get_by_test_id("search-k").fill("6")
        page.get_by_test_id("search-button").click()
        cards = page.get_by_test_id("result-card")
        expect(cards).to_have_count(6)
        expect(cards.first).to_have_attribute("data-id", query["id"])
        assert card_ids(page) == [h["id"] for h in api_hits]
        expect(cards.first).to_contain_text(query["metadata"]["class"])
        first_thumbnail_loaded(page)

        # Clicking a result searches with that item's thumbnail: a new /search, the item now first.
        clicked = card_ids(page)[1]
        with page.expect_response(lambda r: r.url.endswith("/search") and r.request.method == "POST") as done:
            cards.nth(1).click()
        assert done.value.status == 200
        expect(cards.first).to_have_attribute("data-id", clicked)
        expect(page.get_by_test_id("search-query-name")).to_have_text(f"Query: {clicked}")
        first_thumbnail_loaded(page)
        # The same by keyboard: focus is on the first card; Tab to the second, Enter.
        expect(cards.first).to_be_focused()
        page.keyboard.press("Tab")
        expect(cards.nth(1)).to_be_focused()
        pressed = card_ids(page)[1]
        with page.expect_response(lambda r: r.url.endswith("/search") and r.request.method == "POST"):
            page.keyboard.press("Enter")
        expect(cards.first).to_have_attribute("data-id", pressed)
        first_thumbnail_loaded(page)

        # The desktop screenshot, after a compare and a search have rendered.
        page.evaluate("() => document.activeElement.blur()")
        page.mouse.move(0, 0)
        shot = capture_screenshot(page, tmp_path / "page.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000
        with Image.open(shot) as image:
            assert image.width == 1280 and image.height >= 900
            assert len(image.convert("L").getcolors(256)) > 16  # not a blank page

        # Gallery: add an item (an id with a slash and a space); writes need the key: 401, then a
        # wrong key (403), then the right one, and the add is retried.
        page.get_by_test_id("add-files").set_input_files(gallery_file(to_add))
        id_input = page.get_by_test_id("add-id")
        expect(id_input).to_have_value(Path(to_add["file"]).stem)
        new_id = "web test/added item"
        id_input.fill(new_id)
        page.get_by_test_id("add-metadata").fill('{"class": "web-test", "note": "added by the page"}')
        page.get_by_test_id("add-button").click()
        prompt = page.get_by_test_id("key-prompt")
        expect(prompt).to_contain_text("needs an API key")
        expect(page.get_by_test_id("api-key")).to_be_focused()
        page.get_by_test_id("api-key").fill("not-the-key")
        page.get_by_test_id("key-save").click()
        expect(prompt).to_contain_text("not accepted")
        page.get_by_test_id("api-key").fill(API_KEY)
        page.get_by_test_id("key-save").click()
        expect(page.get_by_test_id("add-message")).to_have_text(f"Added 1 item: {new_id}.")
        expect(page.get_by_test_id("key-state")).to_have_text("(set)")
        stored = api.get(item_path(new_id))
        assert stored.status_code == 200, stored.text
        assert stored.json()["metadata"] == {"class": "web-test", "note": "added by the page"}
        expect(page.get_by_test_id("model-index-items")).to_have_text(f"{indexed + 1} items")

        # A filtered search finds it; its thumbnail loads through the id with a slash (fetched with the key).
        page.get_by_test_id("search-file").set_input_files(gallery_file(to_add))
        page.get_by_test_id("search-filter").fill('{"class": "web-test"}')
        page.get_by_test_id("search-button").click()
        expect(cards).to_have_count(1)
        expect(cards.first).to_have_attribute("data-id", new_id)
        expect(cards.first).to_contain_text("added by the page")
        first_thumbnail_loaded(page)
        page.get_by_test_id("search-filter").fill("")

        # Delete it; deleting it again shows the API's 404 as a sentence.
        page.get_by_test_id("delete-id").fill(new_id)
        page.get_by_test_id("delete-button").click()
        expect(page.get_by_test_id("delete-message")).to_have_text(f"Deleted {new_id}.")
        assert api.get(item_path(new_id)).status_code == 404
        expect(page.get_by_test_id("model-index-items")).to_have_text(f"{indexed} items")
        page.get_by_test_id("delete-id").fill(new_id)
        page.get_by_test_id("delete-button").click()
        expect(page.get_by_test_id("delete-message")).to_have_text(f"Error: no item with id '{new_id}'")

        # An API error is shown readably near the action: the detail, not a JSON dump.
        not_image = tmp_path / "notes.txt"
        not_image.write_text("this is not an image\n")
        detail = api.post("/search", files={"image": (not_image.name, not_image.read_bytes(), "text/plain")},
                          data={"k": "3"}).json()["detail"]
        page.get_by_test_id("search-file").set_input_files(not_image)
        page.get_by_test_id("search-button").click()
        message = page.get_by_test_id("search-message")
        expect(message).to_have_text(f"Error: {detail}")
        expect(message).to_have_attribute("aria-live", "polite")
        assert "{" not in message.text_content()
        page.get_by_test_id("search-filter").fill("{not json")
        page.get_by_test_id("search-file").set_input_files(q)
        page.get_by_test_id("search-button").click()
        expect(message).to_contain_text("Error: filter: not valid JSON")

        # Phone width: one column, no horizontal scrolling, with results and add rows on the page.
        page.get_by_test_id("search-filter").fill("")
        page.get_by_test_id("search-button").click()
        expect(cards).to_have_count(6)
        page.get_by_test_id("add-files").set_input_files([gallery_file(boot), gallery_file(shirt)])
        expect(page.get_by_test_id("add-row")).to_have_count(2)
        page.set_viewport_size({"width": 360, "height": 740})
        page.wait_for_function("() => window.innerWidth === 360")
        widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"horizontal overflow at 360 px: {widths}"
        boxes = page.evaluate("""() => ['compare-a', 'compare-b'].map(id =>
            document.getElementById(id).closest('.drop').getBoundingClientRect().toJSON())""")
        assert boxes[1]["top"] >= boxes[0]["bottom"], "the drop zones should stack at phone width"
        capture = tmp_path / "phone.png"
        page.screenshot(path=str(capture), full_page=True)
        assert capture.stat().st_size > 10_000

        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        if context is not None:
            context.close()
        server.stop()


def test_reads_behind_api_key(browser, tmp_path):
    """With LIKENESS_API_KEY_FOR_READS the page asks for the key on load, then everything works,
    thumbnails included (an <img src> cannot send the header, so the page fetches them)."""
    from playwright.sync_api import expect

    items = gallery_items()
    query = next(i for i in items if i["metadata"]["class"] == "sneaker")
    server = start_server(tmp_path, LIKENESS_API_KEY=API_KEY, LIKENESS_API_KEY_FOR_READS="true")
    context = None
    try:
        assert httpx.get(server.url + "/model").status_code == 401
        context, page, errors = open_page(browser, server.url)
        expect(page.get_by_test_id("key-prompt")).to_contain_text("needs an API key")
        expect(page.get_by_test_id("model-provider")).to_have_count(0)
        page.get_by_test_id("api-key").fill(API_KEY)
        page.get_by_test_id("api-key").press("Enter")
        expect(page.get_by_test_id("model-provider")).to_have_text("CPUExecutionProvider")

        page.get_by_test_id("search-file").set_input_files(gallery_file(query))
        page.get_by_test_id("search-button").click()
        cards = page.get_by_test_id("result-card")
        expect(cards).to_have_count(10)
        expect(cards.first).to_have_attribute("data-id", query["id"])
        first_thumbnail_loaded(page)
        clicked = card_ids(page)[3]
        cards.nth(3).click()
        expect(cards.first).to_have_attribute("data-id", clicked)
        first_thumbnail_loaded(page)
        expect(page.get_by_test_id("search-message")).to_contain_text(re.compile(r"^10 results for "))
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        if context is not None:
            context.close()
        server.stop()


def test_aspect_model_shows_a_score_per_aspect(browser, tmp_path):
    """With the CSN model the page offers the aspects and shows one bar per aspect, matching the API:
    the same sandal in red and in blue is alike on category and unlike on colour."""
    from playwright.sync_api import expect

    from tests.conftest import CSN_MODEL
    from training.data.fashion_aspects import PALETTE, tint

    sandal = next(i for i in gallery_items() if i["metadata"]["class"] == "sandal")
    with Image.open(gallery_file(sandal)) as image:
        gray = np.asarray(image.convert("L"))
    paths = []
    for colour in ("red", "blue"):
        path = tmp_path / f"sandal-{colour}.png"
        Image.fromarray(tint(gray[None, :, :, None], np.array([list(PALETTE).index(colour)]))[0]).save(path)
        paths.append(path)
    server = start_server(tmp_path, LIKENESS_MODEL_PATH=str(CSN_MODEL), LIKENESS_SEED_GALLERY="0")
    context = None
    try:
        api = httpx.Client(base_url=server.url, timeout=30)
        expected = api.post("/similarity", files={"image_a": (paths[0].name, paths[0].read_bytes(), "image/png"),
                                                  "image_b": (paths[1].name, paths[1].read_bytes(), "image/png")}
                            ).json()
        assert expected["aspects"]["category"] > expected["aspects"]["color"]
        context, page, errors = open_page(browser, server.url)
        expect(page.get_by_test_id("compare-aspect")).to_be_visible()
        expect(page.get_by_test_id("search-aspect")).to_be_attached()
        page.get_by_test_id("compare-a").set_input_files(paths[0])
        page.get_by_test_id("compare-b").set_input_files(paths[1])
        page.get_by_test_id("compare-button").click()
        bars = page.get_by_test_id("aspect-bar")
        expect(bars).to_have_count(len(expected["aspects"]))
        for name, score in expected["aspects"].items():
            expect(page.locator(f'[data-testid=aspect-bar][data-aspect="{name}"]')).to_have_attribute(
                "aria-label", f"{name}: cosine {score:.4f}")
        # Deciding on one aspect makes the headline score that aspect's.
        page.get_by_test_id("compare-aspect").select_option("color")
        page.get_by_test_id("compare-button").click()
        expect(page.get_by_test_id("compare-decision")).to_contain_text("Different")
        shown = float(page.get_by_test_id("compare-score").text_content())
        assert abs(shown - expected["aspects"]["color"]) < 1e-3
        page.screenshot(path=str(tmp_path / "aspects.png"), full_page=True)
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        if context is not None:
            context.close()
        server.stop()
