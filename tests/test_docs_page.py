"""/docs in a real browser: Debian's headless Chromium (tests/browser.py finds or installs it),
driven by Playwright, opens the page the running app serves.

Every request the browser makes is recorded; one to anywhere but the app is refused and fails
the test, so the page must work without a CDN. Every operation of /openapi.json must be listed
with its summary, and the Authorize button must work: a key entered there is sent by "Try it
out". Screenshots are saved under build/docs-page/ (their paths are printed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests import browser
from tests.conftest import Api

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "build" / "docs-page"
# Every step of the browser waits at most this long (milliseconds).
STEP_MS = 30_000


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: pip install -e '.[dev]' (make test does)")
    return sync_playwright


def test_docs_page_lists_every_operation_and_loads_nothing_from_elsewhere(
    api: Api, new_key: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        executable = browser.chromium()
    except browser.BrowserUnavailable as exc:
        pytest.fail(str(exc))
    schema = httpx.get(f"{api.url}/openapi.json", timeout=30).json()
    expected = {
        (method.upper(), path, operation["summary"])
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }
    assert len(expected) >= 25, "every route is in the schema"
    key = new_key("docs_reader")
    app = urlsplit(api.url).netloc
    requests: list[tuple[str, str, dict[str, str]]] = []
    elsewhere: list[str] = []
    SHOTS.mkdir(parents=True, exist_ok=True)

    with _playwright()() as playwright:
        chrome = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            timeout=STEP_MS * 2,
            # Chromium's own background traffic, and any host name but the app's, cut off too.
            args=[
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        try:
            context = chrome.new_context(
                viewport={"width": 1280, "height": 900}, service_workers="block"
            )

            def route(route: Any) -> None:
                url = route.request.url
                if urlsplit(url).netloc == app or url.startswith("data:"):
                    route.continue_()
                else:
                    elsewhere.append(url)
                    route.abort()

            context.route("**/*", route)
            context.on(
                "request",
                lambda request: requests.append(
                    (request.method, request.url, request.all_headers())
                ),
            )
            page = context.new_page()
            page.set_default_timeout(STEP_MS)
            page.goto(f"{api.url}/docs", wait_until="networkidle")
            page.wait_for_selector(".opblock .opblock-summary-path")
            listed = {
                tuple(entry)
                for entry in page.eval_on_selector_all(
                    ".opblock",
                    """blocks => blocks.map(b => [
                        b.querySelector('.opblock-summary-method').textContent.trim(),
                        b.querySelector('.opblock-summary-path').dataset.path,
                        b.querySelector('.opblock-summary-description').textContent.trim(),
                    ])""",
                )
            }
            title = page.inner_text(".information-container .title")
            listing = SHOTS / "docs.png"
            page.screenshot(path=str(listing), full_page=True)

            # Authorize with the key, then "Try it out" on GET /v1/me.
            page.click("button.authorize")
            page.fill(".auth-container input[type=text]", key)
            page.click(".auth-container button.authorize")
            page.click("button.btn-done")
            me = page.locator("#operations-accounts-whoami_v1_me_get")
            me.locator(".opblock-summary").click()
            me.locator("button.try-out__btn").click()
            me.locator("button.execute").click()
            me.locator(".live-responses-table tr.response .response-col_status").first.wait_for()
            status = me.locator(
                ".live-responses-table tr.response .response-col_status"
            ).first.inner_text()
            answer = me.locator(".live-responses-table .microlight").first.inner_text()
            me.scroll_into_view_if_needed()
            tried = SHOTS / "docs-try-it-out.png"
            page.screenshot(path=str(tried))
        finally:
            chrome.close()

    with capsys.disabled():
        print(f"\n/docs screenshots: {listing} (every operation), {tried} (Authorize, Try it out)")
    assert elsewhere == [], "the page asked for something beyond the app"
    assert requests and all(urlsplit(url).netloc == app for _, url, _ in requests), requests
    assert listed == expected, (
        f"not listed: {sorted(expected - listed)}; listed, not in the schema: "
        f"{sorted(listed - expected)}"
    )
    assert "Tollgate" in title
    sent = [h for method, url, h in requests if url == f"{api.url}/v1/me" and method == "GET"]
    assert [h.get("authorization") for h in sent] == [f"Bearer {key}"], "Authorize set the key"
    assert status.strip() == "200", answer
    assert '"account_id": "docs_reader"' in answer
