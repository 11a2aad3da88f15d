"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real server.

Every request the browser makes is watched: one for anywhere but 127.0.0.1 fails the test (and
cannot leave: Chromium is told to resolve no other name). `KENGELE_SCREENSHOTS=DIR` keeps the
screenshots there; docs/screenshots/ holds the ones the README shows
(`KENGELE_SCREENSHOTS=docs/screenshots pytest tests/test_browser.py -k sqlite`). In CI
(KENGELE_TEST_REQUIRE_BROWSER=1, set by .ci/run) a missing Chromium fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from app.enums import AuditAction
from app.models import AuditLog
from tests.conftest import throwaway_pg
from tests.dashboard import PASSWORD
from tests.helpers import AT_SECRET, at_form, engine, wait_for
from tests.server import KENGELE, Server

CHROMIUM = "/usr/bin/chromium"
ADMIN_TOKEN = "browser-admin-token-0123456789abcdef"
REQUIRE = os.environ.get("KENGELE_TEST_REQUIRE_BROWSER") == "1"
SHOTS = os.environ.get("KENGELE_SCREENSHOTS")
ROSTER = Path(__file__).parent / "corpus" / "roster.csv"
GAZETTEER = Path(__file__).parent / "corpus" / "gazetteer.csv"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the dev extras install it
        if REQUIRE:
            pytest.fail(f"playwright is required here: {exc}")
        pytest.skip("playwright not installed")
    if not Path(CHROMIUM).exists():
        if REQUIRE:
            pytest.fail(f"{CHROMIUM} is required here (apt-get install chromium)")
        pytest.skip(f"no {CHROMIUM}")
    with sync_playwright() as p:
        # Every name but 127.0.0.1 fails to resolve: nothing can leave the machine, whatever a page asks.
        outside = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", outside])
        try:
            yield browser
        finally:
            browser.close()


def cli(server: Server, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [KENGELE, *args],
        env=server.env,
        cwd=server.workdir,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real `kengele serve` per database for the module (each test its own places), with the
    corpus's places and people and one dashboard user of each role."""
    workdir = tmp_path_factory.mktemp(f"browser-{request.param}")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{workdir / 'kengele.db'}"
        else:
            url = stack.enter_context(throwaway_pg("kengele_browser"))
        srv = Server(
            url,
            workdir,
            KENGELE_ENV="test",
            KENGELE_AT_WEBHOOK_SECRET=AT_SECRET,
            KENGELE_ADMIN_TOKEN=ADMIN_TOKEN,
            KENGELE_MAP_TILES="",  # no tile server: the markers and names on a plain background
            KENGELE_DEFAULT_LANGUAGE="en",
        )
        srv.start()
        stack.callback(srv.stop)
        cli(srv, "gazetteer", "import", str(GAZETTEER))
        cli(srv, "roster", "import", str(ROSTER))
        for name, role in (("Ada Admin", "admin"), ("Otto Officer", "officer"), ("Vera Viewer", "viewer")):
            cli(srv, "user", "create", "--role", role, "--name", name, stdin=PASSWORD + "\n")
        yield srv


class Watched:
    """A browser page whose every request is checked: anything not for 127.0.0.1 is noted."""

    def __init__(self, browser: Any, base: str, **context: Any) -> None:
        self.context = browser.new_context(base_url=base, locale="en-GB", **context)
        self.outside: list[str] = []
        # Watched, not routed: routing would turn the browser's cache off (and the cached loads with it).
        self.context.on("request", self._seen)
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.errors: list[str] = []  # script errors of the page: each one a bug
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _seen(self, request: Any) -> None:
        if request.url.startswith(("data:", "blob:")):
            return
        if urlsplit(request.url).hostname != "127.0.0.1":
            self.outside.append(request.url)

    def sign_in(self, name: str) -> None:
        self.page.goto("/login")
        self.page.fill("#username", name)
        self.page.fill("#password", PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url("**/")

    def shot(self, name: str) -> None:
        if SHOTS:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.outside == [], f"requests left 127.0.0.1: {self.outside}"
        assert self.errors == [], f"script errors: {self.errors}"


def sms(server: Server, sender: str, text: str, pid: str) -> None:
    answer = httpx.post(
        f"{server.url}/webhooks/africastalking/{AT_SECRET}/sms",
        data=at_form(sender=sender, text=text, pid=pid),
    )
    assert answer.status_code == 200, answer.text


def incident_at(server: Server, place: str) -> str:
    """The code of the incident at `place` (each test reports from a place of its own)."""

    def found() -> str | None:
        items = api(server, "/api/v1/incidents?limit=200")["items"]
        return next((i["code"] for i in items if i["place_name"] == place), None)

    code: str = wait_for(found)
    return code


def api(server: Server, path: str) -> Any:
    answer = httpx.get(server.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_officer_sees_an_alert_arrive_and_acknowledges_it(browser: Any, server: Server) -> None:
    officer = Watched(browser, server.url)
    try:
        page = officer.page
        officer.sign_in("Otto Officer")
        assert page.locator("li.incident[data-place='Djugu']").count() == 0
        sms(server, "+243810000001", "ALERTE ATTAQUE Djugu 20 hommes armés", "B1")
        # no reload: the list refreshes itself within 5 s
        row = page.locator("li.incident[data-place='Djugu']")
        row.wait_for(timeout=5_000)
        assert "Djugu" in row.inner_text()
        code = row.get_attribute("data-code")
        # a second villager reports the same attack: the same row counts it, again without reload
        sms(server, "+243810000002", "ALERTE ATTAQUE Djugu hommes armés", "B1b")
        page.wait_for_function(
            "code => (document.getElementById('incident-' + code) || {}).innerText.includes('from 2 people')",
            arg=code,
            timeout=5_000,
        )
        assert page.locator("li.incident[data-place='Djugu']").count() == 1
        # on the map too, with its place name (no tiles configured)
        if officer.errors:
            raise AssertionError(officer.errors)
        page.locator(".leaflet-interactive").first.wait_for()
        assert "Djugu" in " ".join(page.locator(".map-label").all_inner_texts())
        officer.shot("incidents")
        row.locator("button", has_text="Acknowledge").click()
        page.wait_for_load_state()
        wait_for(lambda: api(server, f"/api/v1/incidents/{code}")["status"] == "acknowledged")
        assert api(server, f"/api/v1/incidents/{code}")["acknowledged_by"] == "Otto Officer"
        page.goto(f"/incidents/{code}")
        assert "ALERTE ATTAQUE Djugu 20 hommes armés" in page.inner_text("#reports")
        officer.shot("incident")
    finally:
        officer.close()


def test_a_script_in_a_text_is_shown_as_text(browser: Any, server: Server) -> None:
    sms(
        server,
        "+243810000002",
        'A1 Bunia <script>window.pwned=1</script><img src=x onerror="window.pwned=2">',
        "B2",
    )
    code = incident_at(server, "Bunia")
    officer = Watched(browser, server.url)
    try:
        officer.sign_in("Otto Officer")
        officer.page.goto(f"/incidents/{code}")
        assert "<script>window.pwned=1</script>" in officer.page.inner_text("#reports")
        assert officer.page.evaluate("window.pwned") is None
    finally:
        officer.close()


def test_an_admin_reveals_a_number_a_viewer_cannot(browser: Any, server: Server) -> None:
    sms(server, "+243810000003", "A1 Mongbwalu", "B3")
    code = incident_at(server, "Mongbwalu")
    viewer = Watched(browser, server.url)
    try:
        viewer.sign_in("Vera Viewer")
        viewer.page.goto(f"/incidents/{code}")
        text = viewer.page.inner_text("#reports")
        assert "810000003" not in text and viewer.page.locator("text=Reveal the number").count() == 0
        report = api(server, f"/api/v1/incidents/{code}")["reports"][0]["id"]
        token = viewer.page.locator("input[name=csrf_token]").first.get_attribute("value")
        forced = viewer.page.request.post(
            f"/incidents/{code}/reports/{report}/reveal",
            form={"csrf_token": token or "", "reason": "curious"},
        )
        assert forced.status == 403 and "810000003" not in forced.text()
    finally:
        viewer.close()
    admin = Watched(browser, server.url)
    try:
        admin.sign_in("Ada Admin")
        admin.page.goto(f"/incidents/{code}")
        admin.page.click("text=Reveal the number")
        admin.page.fill("input[name=reason]", "call back to verify")
        admin.page.click("button:has-text('Reveal')")
        admin.page.wait_for_load_state()
        assert "+243810000003" in admin.page.inner_text("#reports")
    finally:
        admin.close()
    db = engine(server.env["KENGELE_DATABASE_URL"])
    try:
        with db.connect() as conn:
            entries = conn.execute(
                select(AuditLog).where(
                    AuditLog.action == AuditAction.REVEAL_PHONE, AuditLog.entity_id == str(report)
                )
            ).all()
    finally:
        db.dispose()
    # the audit log holds who and why, once (the viewer's attempt was refused), never the number
    assert [(e.actor, e.details["reason"]) for e in entries] == [("web:Ada Admin", "call back to verify")]
    assert "810000003" not in str(entries[0].details)


def test_a_forged_form_from_another_origin_is_refused(browser: Any, server: Server) -> None:
    sms(server, "+243810000004", "A1 Kpandroma", "B4")
    code = incident_at(server, "Kpandroma")
    forger = ThreadingHTTPServer(("127.0.0.1", 0), _forgery(f"{server.url}/incidents/{code}/ack"))
    threading.Thread(target=forger.serve_forever, daemon=True).start()
    officer = Watched(browser, server.url)
    try:
        officer.sign_in("Otto Officer")  # the session cookie is in the browser
        officer.page.goto(f"http://127.0.0.1:{forger.server_address[1]}/")
        officer.page.wait_for_load_state("networkidle")
        assert api(server, f"/api/v1/incidents/{code}")["status"] == "open"
        assert "csrf_token" in officer.page.content()  # the dashboard's refusal names the field
    finally:
        officer.close()
        forger.shutdown()


def _forgery(target: str) -> type[BaseHTTPRequestHandler]:
    page = f"""<!doctype html><form id=f method=post action="{target}"><input name=back value="/"></form>
<script>document.getElementById('f').submit()</script>""".encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    return Handler


def test_every_page_reads_at_360_px_and_stays_light(browser: Any, server: Server) -> None:
    sms(server, "+243810000005", "ALERTE PILLAGE Fataki 12 hommes armés ont tout pris", "B5")
    sms(server, "+243810000006", "quelque chose se passe ici venez vite", "B6")
    code = incident_at(server, "Fataki")
    admin = Watched(browser, server.url, viewport={"width": 360, "height": 740}, is_mobile=True)
    sizes: dict[str, tuple[int, int]] = {}
    try:
        admin.sign_in("Ada Admin")
        for name, path in (
            ("incidents", "/"),
            ("incident", f"/incidents/{code}"),
            ("triage", "/triage"),
            ("network", "/network"),
            ("messages", "/messages"),
            ("roster", "/roster"),
            ("person", "/roster/1"),
            ("admin", "/admin"),
        ):
            first = _load(admin.page, path, cold=True)
            later = _load(admin.page, path, cold=False)
            sizes[name] = (first, later)
            width = admin.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"{path} is {width} px wide at 360"
            admin.shot(f"{name}-360")
    finally:
        admin.close()
    print("PAGE SIZES (bytes transferred: first load, cached load):", json.dumps(sizes))
    for name, (first, later) in sizes.items():
        assert first < 300_000 and later < 30_000, (name, first, later)


def _load(page: Any, path: str, *, cold: bool) -> int:
    """Bytes the page's load transferred (the document and every resource), cache emptied if `cold`."""
    if cold:
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.clearBrowserCache")
        cdp.detach()
    page.goto(path)
    page.wait_for_load_state("networkidle")
    return int(
        page.evaluate(
            """() => performance.getEntriesByType('navigation')
                 .concat(performance.getEntriesByType('resource'))
                 .reduce((sum, e) => sum + (e.transferSize || 0), 0)"""
        )
    )


def test_pages_read_and_acknowledge_with_javascript_off(browser: Any, server: Server) -> None:
    sms(server, "+243810000007", "A1 Drodro", "B7")
    code = incident_at(server, "Drodro")
    officer = Watched(browser, server.url, java_script_enabled=False)
    try:
        officer.sign_in("Otto Officer")
        assert "Djugu" in officer.page.inner_text("#incident-list")
        officer.page.click(f"#incident-{code} button:has-text('Acknowledge')")
        officer.page.wait_for_load_state()
        assert api(server, f"/api/v1/incidents/{code}")["status"] == "acknowledged"
    finally:
        officer.close()


def test_an_admin_imports_a_roster_with_a_bad_row_and_reads_the_report(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    csv = tmp_path / "new-people.csv"
    csv.write_text(
        "name,phone,role\nAmani Kahindo,+243810004401,focal_point\nBad Phone,12,focal_point\n",
        encoding="utf-8",
    )
    admin = Watched(browser, server.url)
    try:
        admin.sign_in("Ada Admin")
        admin.page.goto("/roster")
        admin.page.set_input_files("input[name=file]", str(csv))
        admin.page.click("form[action='/roster/import'] button[type=submit]")
        admin.page.wait_for_load_state()
        errors = admin.page.inner_text("#import-errors")
        assert "3" in errors and "phone" in errors  # row 3, its column, its reason
        assert "Nothing was imported" in admin.page.inner_text("#import-result")
        admin.shot("roster-import")
        people = api(server, "/api/v1/people?limit=200")["items"]
        assert all(p["name"] != "Amani Kahindo" for p in people)  # nothing changed
        admin.page.goto("/admin")
        admin.shot("admin")
    finally:
        admin.close()
