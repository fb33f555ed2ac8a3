"""The web page with a model of fewer than 5 classes, in headless Chromium (as test_page.py).

The page once asked for top_k=5 whatever the model: a 3-class model would refuse every upload.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from custom_graphs import PHOTO_CLASS, THREE_CLASSES, derive
from playwright.sync_api import expect, sync_playwright
from service_helpers import live_server, settings_for

# Debian's Chromium, as tests/interfaces/test_page.py launches it.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def test_page_shows_every_class_of_a_three_class_model(
    lite0_onnx: Path, tmp_path: Path, photos: dict[str, Any]
) -> None:
    model = derive(lite0_onnx, tmp_path / "three.onnx", classes=THREE_CLASSES)
    settings = settings_for(model, variant=None)
    with live_server(settings) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            expect(page.locator("#variant")).to_contain_text("lite0 · 3 classes")
            for photo, label in PHOTO_CLASS.items():
                page.set_input_files("#file", photos[photo].path)
                rows = page.locator("#results li")
                expect(rows).to_have_count(3)
                expect(rows.first.locator(".label")).to_have_text(label)
                expect(page.locator("#status")).to_contain_text("ms")
            assert errors == []
        finally:
            browser.close()
