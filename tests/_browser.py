"""Open a page in Debian's headless chromium through Playwright; report console errors and network requests.

Playwright cannot download its own browser on these machines; ``.ci/run`` installs Debian's ``chromium``
and these helpers point Playwright at it. Without chromium the calling test is skipped with the reason.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class PageLoad:
    title: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # everything but the page itself and data: URLs
    text: str = ""


def open_page(url: str) -> PageLoad:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url)
            page.wait_for_load_state("load")
            title, text = page.title(), page.inner_text("body")
        finally:
            browser.close()
    others = [r for r in requests if r != url and not r.startswith("data:")]
    return PageLoad(title, errors, others, text)
