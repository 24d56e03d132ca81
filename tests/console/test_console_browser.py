"""The DPO console in a real browser (Debian's chromium driven by
Playwright) against a real werkzeug server: sign in, verify a deletion
request with the code the subject received, execute it, see it completed,
and download the report of an access request."""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.request

import pytest

from tests.conftest import service_missing
from tests.console.conftest import PASSWORD
from tests.dsr.conftest import ATTACKER, VICTIM, add_person, codes_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_context(tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        service_missing("chromium", f"{CHROMIUM} is missing; scripts/test installs Debian's package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("chromium", "the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            accept_downloads=True, locale="pt-BR")
        context.set_default_timeout(60_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def served(app):
    from werkzeug.serving import make_server

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=30)


def _open_request(base: str, runtime, type_: str, email: str) -> str:
    """Through the public API, as the subject would; returns the request id once its code is in the outbox."""
    req = urllib.request.Request(f"{base}/api/v1/dsr", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"type": type_, "identifiers": {"email": email}}).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 202
        request_id = json.loads(resp.read())["request_id"]
    # The code goes out after the answer (same timing for everyone): wait for it, as the subject does.
    for _ in range(600):
        if codes_for(runtime, request_id):
            return request_id
        time.sleep(0.1)
    raise AssertionError("no verification code reached the outbox")


def _verify_in_console(page, base: str, request_id: str, code: str) -> None:
    page.goto(f"{base}/console/requests")
    page.click(f'tr[data-request-id="{request_id}"] a')
    page.fill('input[name="code"]', code)
    page.click('form[action$="/verify-code"] button[type="submit"]')
    page.wait_for_selector("text=Identidade verificada.")


def test_dpo_verifies_executes_and_downloads_in_a_real_browser(browser_context, served, runtime, staff):
    email = staff("dpo")
    add_person(runtime, VICTIM)
    add_person(runtime, ATTACKER)
    deletion = _open_request(served, runtime, "deletion", VICTIM["email"])

    page = browser_context.new_page()
    page.goto(f"{served}/console/requests")
    assert "/console/login" in page.url  # signed out: the login form
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', PASSWORD)
    page.click('form[action$="/console/login"] button[type="submit"]')
    page.wait_for_selector("h1:has-text('Fila de pedidos')")
    assert page.locator(f'tr[data-request-id="{deletion}"]').count() == 1

    _verify_in_console(page, served, deletion, codes_for(runtime, deletion)[VICTIM["email"]])
    assert page.get_attribute("#request-status", "data-status") == "identity_verified"
    page.click("#execute")
    page.wait_for_selector('tr[data-system="source:crm"] button')  # the CRM erasure is confirmed by a person
    page.click('tr[data-system="source:crm"] button')
    page.wait_for_selector('#request-status[data-status="completed"]')
    assert "concluído" in page.inner_text("#request-status")
    assert "identity_verified" in page.inner_text("table.timeline")

    access = _open_request(served, runtime, "access", ATTACKER["email"])
    _verify_in_console(page, served, access, codes_for(runtime, access)[ATTACKER["email"]])
    page.wait_for_selector('#request-status[data-status="completed"]')  # access runs on verification
    with page.expect_download() as info:
        page.click(f'a[href$="/console/requests/{access}/download?format=json"]')
    download = info.value
    assert download.suggested_filename.endswith(".json")
    report = json.loads(open(download.path(), encoding="utf-8").read())
    assert report["source_records"][0]["source"] == "crm"
    assert report["profiles"][0]["attributes"]["cpf"] == "11144477735"

    # English is one click away, and stays for the session.
    page.click("a[lang=en]")
    page.wait_for_selector("text=Timeline (audit trail)")
    page.goto(f"{served}/console/requests")
    page.wait_for_selector("h1:has-text('Request queue')")
