"""The page at ``GET /`` in headless Chromium (Debian's ``chromium``), driven by Playwright."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import httpx
import pytest
from photos import Photo
from playwright.sync_api import Browser, Page, expect, sync_playwright
from server_process import ROOT, LiveServer

# Debian's Chromium (Playwright's own browser download cannot work here); `make test` passes the
# one it installed or found as $CHROMIUM.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = ROOT / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 720})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == []  # no uncaught JavaScript errors


def top_label(server: LiveServer, photo: Photo) -> str:
    with photo.path.open("rb") as f:
        response = httpx.post(
            f"{server.url}/classify", files={"file": f}, headers=server.auth, timeout=60
        )
    prediction = response.json()["predictions"][0]
    assert prediction["index"] in photo.expected
    return prediction["label"]


def enter_api_key(page: Page, server: LiveServer) -> None:
    page.goto(server.url)
    # The server has a key: the page says so and opens the key box rather than failing silently.
    expect(page.locator("#status")).to_contain_text("needs an API key")
    expect(page.locator("#key-box")).to_have_attribute("open", "")
    page.fill("#api-key", server.api_key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#variant")).to_contain_text("lite0")
    expect(page.locator("#device")).to_contain_text("CPUExecutionProvider")


def test_the_empty_page_shows_the_prompt_not_a_broken_image(
    page: Page, live_server: LiveServer
) -> None:
    enter_api_key(page, live_server)
    page.reload()  # the page as a visitor finds it: key kept for the tab, nothing chosen yet
    expect(page.locator("#variant")).to_contain_text("lite0")
    # No photo chosen yet: the preview <img> has no src, so if shown it is a broken-image icon
    # with its alt text inside the drop zone. `hidden` must win over the stylesheet.
    preview = page.locator("#preview")
    assert preview.get_attribute("src") is None
    expect(preview).to_be_hidden()
    assert preview.evaluate("img => getComputedStyle(img).display") == "none"
    assert preview.evaluate("img => img.getBoundingClientRect().height") == 0
    expect(page.locator("#drop-hint")).to_be_visible()
    expect(page.locator("#drop-hint")).to_contain_text("Drop an image here")
    expect(page.locator("#status")).to_contain_text("Choose an image")
    expect(page.locator("#results li")).to_have_count(0)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-empty.png", full_page=True)


def test_upload_shows_the_right_label_with_score_bars(
    page: Page, live_server: LiveServer, photos: dict[str, Photo]
) -> None:
    photo = photos["chelsea"]
    expected = top_label(live_server, photo)
    enter_api_key(page, live_server)
    page.set_input_files("#file", photo.path)
    rows = page.locator("#results li")
    expect(rows).to_have_count(5)
    expect(rows.first.locator(".label")).to_have_text(expected)
    assert int(rows.first.get_attribute("data-index") or -1) in photo.expected
    widths = [float(rows.nth(i).locator(".bar span").evaluate("e => e.style.width")[:-1])
              for i in range(5)]  # fmt: skip
    assert widths == sorted(widths, reverse=True) and widths[0] > 10
    assert page.locator("#preview").evaluate("img => img.complete && img.naturalWidth") > 0
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#drop-hint")).to_be_hidden()  # the photo replaces the prompt
    expect(page.locator("#status")).to_contain_text("ms")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-chelsea.png", full_page=True)


def test_dropping_a_file_classifies_it_and_the_key_survives_a_reload(
    page: Page, live_server: LiveServer, photos: dict[str, Photo]
) -> None:
    photo = photos["coffee"]
    expected = top_label(live_server, photo)
    enter_api_key(page, live_server)
    page.reload()  # sessionStorage keeps the key for this tab: no prompt this time
    expect(page.locator("#variant")).to_contain_text("lite0")
    expect(page.locator("#status")).not_to_contain_text("API key")
    data = base64.b64encode(photo.path.read_bytes()).decode()
    page.evaluate(
        """data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "coffee.jpg", {type: "image/jpeg"}));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""",
        data,
    )
    expect(page.locator("#results li").first.locator(".label")).to_have_text(expected)
    expect(page.locator("#filename")).to_have_text("coffee.jpg")


def test_a_rejected_file_is_reported_on_the_page(
    page: Page, live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bogus = tmp_path_factory.mktemp("page") / "notes.png"
    bogus.write_text("not a picture")
    enter_api_key(page, live_server)
    page.set_input_files("#file", bogus)
    expect(page.locator("#status")).to_contain_text("Rejected (4")
    expect(page.locator("#status")).to_have_class("muted error")
    expect(page.locator("#results li")).to_have_count(0)
