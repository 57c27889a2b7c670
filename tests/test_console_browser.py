"""The console in a real browser: headless Chromium (Debian's, driven by Playwright) against the
local host serving function_app over real HTTP on loopback, with the sample mail, a mail with a
non-Latin attachment and a corpus of hostile HTML mails filed into Azurite.

One browser and one filing for the whole module (tests use different records); each test has
a fresh browser context that logs every request and aborts any that would leave 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from aiosmtpd.controller import Controller

from shared.cli.azurite import REPO, Azurite, free_port
from shared.cli.host import LocalHost
from shared.cli.local_http import LocalHttpServer
from shared.core.config.events import Events, Webhook
from shared.core.contracts import Event
from shared.core.message import id_key
from shared.core.mime import mail_bodies
from shared.core.signing import verify_message_id
from shared.services.audit import day_trail
from shared.services.context import AppContext, set_context, signing_keys
from shared.services.events import event_id
from shared.services.messages import message_status
from shared.services.poison import send_to_poison
from shared.services.records import resolve
from shared.services.webhooks import Delivery
from shared.settings import AppSettings, load_config
from shared.stages.deliveries import deliver
from shared.stages.polls import poll_all
from shared.store import delivery_log
from shared.store.account import RequestCounter, StorageSettings
from shared.store.queues import decode, encode
from shared.store.stores import DELIVERIES, DELIVERY_LOG, QUEUES, TABLES, Stores, poison

from .conftest import SAMPLES
from .helpers import local_host
from .test_outbound import Sink

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.azurite,
    pytest.mark.browser,
    # One worker runs the module: one filing and one browser, not one per worker.
    pytest.mark.xdist_group("console-browser"),
    # CI (.ci/run installs chromium) fails without it rather than skip.
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason="needs Debian's chromium (apt-get install chromium)",
    ),
]
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SHOTS = REPO / "docs" / "screenshots"

# A mail whose attachment has a name in Cyrillic, Greek and Japanese, and bytes of every value.
ATTACHMENT_NAME = "Счёт №7 – Λογαριασμός 請求書.pdf"
ATTACHMENT_BYTES = b"%PDF-1.4\n" + bytes(range(256)) * 8
ATTACHMENT_SUBJECT = "Счёт за ноябрь – Λογαριασμός"

# Hostile HTML mails: each would, if anything of it ran or loaded, raise a dialog, request
# `pwned` from a foreign host or from us, or navigate away. The console must show each one
# inert. {n} is the mail's number.
HOSTILE = [
    ("script tag", "<p>hi</p><script>alert('pwned{n}');fetch('/api/pwned{n}')</script>"),
    ("event handler", "<img src=x onerror=\"alert('pwned{n}')\"><body onload=alert(1)>"),
    ("javascript link", "<a id=l href=\"javascript:alert('pwned{n}')\">click me</a>"),
    (
        "css url",
        '<div style="background:url(http://css.evil.example/pwned{n})">a</div>'
        "<style>body{{background-image:url('http://css.evil.example/pwned{n}b')}}</style>",
    ),
    ("meta refresh", '<meta http-equiv="refresh" content="0;url=http://evil.example/pwned{n}">x'),
    (
        "svg with script",
        '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(\'pwned{n}\')'
        '</script><image href="http://svg.evil.example/pwned{n}"/></svg>',
    ),
    (
        "form",
        '<form action="http://evil.example/pwned{n}" method=post><input name=p value=secret>'
        '<button id=go>Go</button></form><form action="/api/pwned{n}"><input type=submit></form>',
    ),
    ("remote image", '<p>Look:</p><img id=track src="http://images.evil.example/pwned{n}.png">'),
    (
        "base",
        '<base href="http://evil.example/"><a href="pwned{n}">rel</a><img src="pwned{n}.png">',
    ),
    (
        "object and embed",
        '<object data="http://evil.example/pwned{n}.swf"></object>'
        '<embed src="http://evil.example/pwned{n}e.swf"><iframe src="http://evil.example/pwned{n}f">'
        "</iframe>",
    ),
    (
        "link and import",
        '<link rel=stylesheet href="http://evil.example/pwned{n}.css">'
        "<style>@import url(http://evil.example/pwned{n}i.css);</style>"
        '<video poster="http://evil.example/pwned{n}v.png"></video>',
    ),
    (
        "data and srcset",
        '<a href="data:text/html,<script>alert(1)</script>">d</a>'
        '<img srcset="http://evil.example/pwned{n}s.png 2x">'
        "<iframe srcdoc=\"<script>alert('pwned{n}')</script>\"></iframe>",
    ),
    # Its own images (multipart/related, see _mail): the PNG is shown from the mail; the SVG
    # (with script) and an id the mail does not have are not, and a cid: link goes nowhere.
    (
        "cid images",
        '<p>Logo:</p><img src="cid:logo-{n}@mail.example" alt=logo>'
        '<img src="cid:svg-{n}@mail.example" alt=svg>'
        '<img src="cid:missing-{n}@mail.example" alt=missing>'
        '<a href="cid:logo-{n}@mail.example">cid link</a>',
    ),
]
# It can send too (replies from the console), to an SMTP sink on loopback. Mailbox `broken`
# is an IMAP server that is not there: its first poll fails and disables it.
HOSTILE_MAILBOX = """  - name: hostile
    kind: local
    path: {path}
    record_type: case
    addresses: [support@mailfiler.example]
    smtp: {{host: 127.0.0.1, port: {port}, tls: none, auth: none}}
  - name: broken
    kind: imap
    host: 127.0.0.1
    port: {closed}
    tls: none
    username: support@broken.example
    password_setting: CONSOLE_BROKEN_PASSWORD
    record_type: case
    disable_after_failures: 1
"""
# What no sanitised mail may hold.
HOSTILE_WORDS = (
    "<script",
    "onerror",
    "onload",
    "javascript:",
    "url(",
    "<meta",
    "<form",
    "<base",
    "<object",
    "<embed",
    "<iframe",
    "<link",
    "<svg",
    "srcset",
    "evil.example",
)
REMOTE_IMAGE = next(i for i, (name, _) in enumerate(HOSTILE) if name == "remote image")
CID_IMAGES = next(i for i, (name, _) in enumerate(HOSTILE) if name == "cid images")


def _png(width: int, height: int) -> bytes:
    """A real PNG of one colour (the browser must be able to draw it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xd0\x30\x30" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


LOGO = _png(12, 8)


def _mail(n: int, subject: str, html: str | None, text: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Mallory {n} <mallory{n}@evil.example>"
    msg["To"] = "support@mailfiler.example"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime(2026, 11, 20, 9, n % 60, tzinfo=UTC))
    msg["Message-ID"] = f"<console-{n}@evil.example>"
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
        if "cid:" in html:
            markup = msg.get_body(("html",))
            assert markup is not None
            markup.add_related(LOGO, "image", "png", cid=f"<logo-{n}@mail.example>")
            svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
            markup.add_related(svg, "image", "svg+xml", cid=f"<svg-{n}@mail.example>")
    return bytes(msg)


def _attachment_mail() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ольга Петрова <olga@example.ru>"
    msg["To"] = "support@mailfiler.example"
    msg["Subject"] = ATTACHMENT_SUBJECT
    msg["Date"] = format_datetime(datetime(2026, 11, 21, 10, 0, tzinfo=UTC))
    msg["Message-ID"] = "<invoice-ru@example.ru>"
    msg.set_content("Здравствуйте, счёт во вложении.\n\nОльга")
    msg.add_attachment(
        ATTACHMENT_BYTES, maintype="application", subtype="pdf", filename=ATTACHMENT_NAME
    )
    msg.add_attachment(
        b"<script>alert('pwned-att')</script>", maintype="text", subtype="html", filename="a.html"
    )
    return bytes(msg)


@dataclass
class Site:
    base: str  # http://127.0.0.1:PORT
    context: AppContext
    mail_dir: Path
    raw: dict[str, bytes] = field(default_factory=dict)  # subject -> the mail's bytes
    host: LocalHost | None = None
    sink: Sink | None = None

    @property
    def console(self) -> str:
        return f"{self.base}/api/console"


def _fresh_stores(azurite: Azurite) -> Stores:
    stores = Stores.connect(
        StorageSettings(connection_string=azurite.connection_string), RequestCounter()
    )
    for name in TABLES:
        stores.account.tables.delete_table(name)
    stores.ensure()
    for queue in QUEUES:
        stores.queues.clear(queue)
        stores.queues.clear(poison(queue))
    return stores


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    found = Sink(free_port())
    controller = Controller(found, hostname="127.0.0.1", port=found.port)
    controller.start()
    yield found
    controller.stop()


@pytest.fixture(scope="module")
def site(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory, sink: Sink) -> Iterator[Site]:
    """The sample mail, the attachment mail and the hostile corpus, filed and served."""
    root = tmp_path_factory.mktemp("console")
    mail_dir, hostile_dir = root / "mail", root / "hostile"
    shutil.copytree(SAMPLES / "mail", mail_dir)
    hostile_dir.mkdir()
    raw: dict[str, bytes] = {}
    raw[ATTACHMENT_SUBJECT] = _attachment_mail()
    (mail_dir / "90-invoice-ru.eml").write_bytes(raw[ATTACHMENT_SUBJECT])
    for n, (name, html) in enumerate(HOSTILE):
        subject = f"Hostile {n}: {name} <script>alert('pwned-subject')</script>"
        raw[subject] = _mail(n, subject, html.format(n=n), f"hostile mail {n}")
        (hostile_dir / f"{n:02d}.eml").write_bytes(raw[subject])
    # The hostile corpus arrives in a mailbox of its own.
    config_file = root / "mailfiler.yaml"
    config_file.write_text(
        (SAMPLES / "mailfiler.yaml")
        .read_text()
        .replace("path: mail", f"path: {mail_dir}")
        .replace(
            "\nroutes:",
            HOSTILE_MAILBOX.format(path=hostile_dir, port=sink.port, closed=free_port())
            + "\nroutes:",
        )
        + "\nsigning: {key_settings: [CONSOLE_SIGNING_KEY]}\n"
    )
    os.environ["CONSOLE_BROKEN_PASSWORD"] = "not-a-secret"
    os.environ["CONSOLE_SIGNING_KEY"] = "a-signing-key-of-32-bytes-length"
    settings = AppSettings.model_validate(
        {"AzureWebJobsStorage": azurite.connection_string, "MAILFILER_CONFIG": str(config_file)}
    )
    config = load_config(config_file)
    context = AppContext(settings, config, root, _fresh_stores(azurite), signing_keys(config))
    set_context(context)
    poll_all(context, NOW)
    host = local_host(context.stores.queues)
    host.drain()
    server = LocalHttpServer(("127.0.0.1", free_port()), host, route_prefix="api")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        yield Site(base, context, mail_dir, raw, host, sink)
    finally:
        server.shutdown()
        server.server_close()
        set_context(None)
        os.environ.pop("CONSOLE_BROKEN_PASSWORD", None)
        os.environ.pop("CONSOLE_SIGNING_KEY", None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@dataclass
class Watched:
    """A page whose dialogs and requests are recorded; requests off 127.0.0.1 are aborted."""

    page: Any
    requests: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def own_requests(self, needle: str) -> list[str]:
        return [u for u in self.requests if needle in u]


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900})
    page = context.new_page()
    seen = Watched(page)

    def route(route: Any) -> None:
        url = route.request.url
        seen.requests.append(url)
        host = urlsplit(url).hostname
        if url.startswith(("data:", "blob:", "about:")) or host == "127.0.0.1":
            route.continue_()
        else:
            seen.foreign.append(url)
            route.abort()

    context.route("**/*", route)
    context.on("request", lambda r: seen.requests.append(r.url))

    def dialog(d: Any) -> None:
        seen.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    try:
        yield seen
    finally:
        context.close()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _open_record(site: Site, w: Watched, title_part: str) -> None:
    """Find the record by the text filter, open it."""
    page = w.page
    page.goto(f"{site.console}/records")
    page.fill("input[name=q]", title_part)
    page.click("form.filters button")
    links = page.locator("table.records td.title a")
    assert links.count() == 1, page.content()[:2000]
    links.first.click()
    page.wait_for_selector("section.timeline")


# --- the list and a record --------------------------------------------------------------------


def test_browser_find_a_record_by_filter_and_read_it(site: Site, watched: Watched) -> None:
    page = watched.page
    response = page.goto(f"{site.console}/records")
    assert response is not None and response.status == 200
    headers = response.headers
    assert "script-src" not in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"
    assert headers["x-content-type-options"] == "nosniff"
    total = len(HOSTILE) + 1 + 4  # the corpus, the attachment mail, the sample's four cases
    assert page.locator("table.records tbody tr").count() == total
    stamps = page.locator("table.records time").evaluate_all(
        "els => els.map(e => e.getAttribute('datetime'))"
    )
    assert stamps == sorted(stamps, reverse=True)  # newest activity first
    statuses = page.locator(".counts .n").evaluate_all("e => e.map(x => x.dataset.status)")
    numbers = [int(n) for n in page.locator(".counts .n").all_inner_texts()]
    shown = page.locator("table.records .status").all_inner_texts()
    assert dict(zip(statuses, numbers, strict=True)) == {s: shown.count(s) for s in set(shown)}
    # The page's time, warm (the first page also loads Jinja2 and compiles the templates).
    started = time.perf_counter()
    again = page.goto(f"{site.console}/records")
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert again is not None
    timing = again.headers["server-timing"]
    print(f"\nconsole list page, {total} records: {elapsed_ms:.0f} ms in the browser; {timing}")

    # Pages of 5: every record once, newest activity first across the pages.
    page.goto(f"{site.console}/records?mailbox=hostile&limit=5")
    seen: list[str] = []
    times: list[str] = []
    for _ in range(10):
        titles = page.locator("table.records td.title").all_inner_texts()
        assert 0 < len(titles) <= 5
        seen += titles
        times += page.locator("table.records time").evaluate_all(
            "els => els.map(e => e.getAttribute('datetime'))"
        )
        if not page.locator("a[rel=next]").count():
            break
        page.click("a[rel=next]")
    assert len(seen) == len(set(seen)) == len(HOSTILE)
    assert times == sorted(times, reverse=True) and len(set(times)) > 1
    assert all(t.startswith("Hostile ") for t in seen)

    # Filters: the mailbox (the sample's, for the README's screenshot), the contact, and text
    # in another script.
    page.select_option("select[name=mailbox]", "sample")
    page.click("form.filters button")
    assert page.locator("table.records tbody tr").count() == 5
    assert page.locator(".counts .n").all_inner_texts() == ["5"]  # counted in that mailbox
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1000, "height": 560})
    page.screenshot(path=str(SHOTS / "console-records.png"))
    page.click(".counts a")  # a status's count leads to its records, the mailbox kept
    assert "mailbox=sample" in page.url and "status=new" in page.url
    assert page.locator("table.records tbody tr").count() == 5
    page.fill("input[name=contact]", "olga@example.ru")
    page.click("form.filters button")
    titles = page.locator("table.records td.title").all_inner_texts()
    assert titles == [ATTACHMENT_SUBJECT]
    _open_record(site, watched, "ноябрь")
    assert page.locator("h1").inner_text().endswith(ATTACHMENT_SUBJECT)
    assert page.locator("#status").inner_text() == "new"
    entry = page.locator(".timeline .entry").first
    assert "olga@example.ru" in entry.locator(".from").inner_text()
    assert "счёт во вложении" in entry.locator(".text").inner_text()
    assert page.locator(".audit tbody tr").count() >= 2  # created, and this very read

    # A conversation of the sample, in and out, for the README's screenshot.
    _open_record(site, watched, "printer")
    directions = page.locator(".timeline .dir").all_inner_texts()
    # The question, the support desk's answer (read from the sample's Sent folder), the reply.
    assert directions == ["In", "Out", "In"]
    page.set_viewport_size({"width": 1000, "height": 900})
    page.screenshot(path=str(SHOTS / "console-record.png"), full_page=True)
    assert watched.dialogs == [] and watched.foreign == []


def test_browser_read_the_whole_mail_and_download_attachment_and_raw(
    site: Site, watched: Watched
) -> None:
    page = watched.page
    _open_record(site, watched, "ноябрь")
    page.click("a.whole")
    page.wait_for_selector("iframe.mail")
    frame = page.frame_locator("iframe.mail")
    assert "счёт во вложении" in frame.locator("pre").inner_text()
    assert page.locator("iframe.mail").get_attribute("sandbox") == ""

    with page.expect_download() as got:
        page.click(f"a.attachment:text('{ATTACHMENT_NAME}')")
    download = got.value
    assert download.suggested_filename == ATTACHMENT_NAME
    assert Path(download.path()).read_bytes() == ATTACHMENT_BYTES

    with page.expect_download() as got:
        page.click("a#raw")
    raw_download = got.value
    assert raw_download.suggested_filename.endswith(".eml")
    assert Path(raw_download.path()).read_bytes() == site.raw[ATTACHMENT_SUBJECT]

    # The headers themselves, as any client gets them.
    links = page.locator("a.attachment").evaluate_all("e => e.map(a => a.href)")
    status, headers, body = _get(links[0])
    assert status == 200 and body == ATTACHMENT_BYTES
    assert headers["content-type"] == "application/pdf"
    assert headers["x-content-type-options"] == "nosniff"
    disposition = headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    assert "filename*=UTF-8''" in disposition
    assert disposition.isascii()
    # The HTML attachment goes as bytes, never as a page.
    status, headers, body = _get(links[1])
    assert (status, headers["content-type"]) == (200, "application/octet-stream")
    assert headers["content-disposition"] == 'attachment; filename="a.html"'
    status, headers, body = _get(page.locator("a#raw").evaluate("a => a.href"))
    assert status == 200 and body == site.raw[ATTACHMENT_SUBJECT]
    assert headers["content-type"] == "message/rfc822"
    assert headers["content-disposition"].startswith("attachment;")
    assert watched.dialogs == [] and watched.foreign == []


def test_the_api_serves_the_same_downloads(site: Site) -> None:
    api = f"{site.base}/api"
    _, _, hostile = _get(f"{api}/records?mailbox=hostile&limit=50")
    assert len(json.loads(hostile)["records"]) == len(HOSTILE)
    status, _, nothing = _get(f"{api}/records?mailbox=nope")
    assert (status, json.loads(nothing)["records"]) == (200, [])  # matches nothing
    _, _, page = _get(f"{api}/records?q={quote('НОЯБРЬ')}")  # any case
    (record,) = json.loads(page)["records"]
    _, _, body = _get(f"{api}/records/case/{record['id']}")
    entry = json.loads(body)["timeline"][0]
    url = f"{api}/records/case/{record['id']}/messages/{entry['message_key']}/attachments/0"
    status, headers, data = _get(url)
    assert status == 200 and data == ATTACHMENT_BYTES
    assert headers["x-content-type-options"] == "nosniff"
    quoted = "%D0%A1%D1%87%D1%91%D1%82"  # "Счёт", percent-encoded UTF-8
    assert f"filename*=UTF-8''{quoted}" in headers["content-disposition"]
    status, headers, data = _get(f"{api}/messages/{entry['message_key']}/raw")
    assert status == 200 and data == site.raw[ATTACHMENT_SUBJECT]
    assert headers["content-type"] == "message/rfc822"
    # By Message-ID too, as /messages/{key} takes it.
    status, _, data = _get(f"{api}/messages/%3Cinvoice-ru@example.ru%3E/raw")
    assert status == 200 and data == site.raw[ATTACHMENT_SUBJECT]
    for bad in (f"{url[:-1]}9", f"{url[:-1]}x", f"{api}/messages/ffff/raw"):
        status, headers, data = _get(bad)
        assert status == 404 and json.loads(data)["error"]["code"], bad


def test_browser_change_the_status(site: Site, watched: Watched, browser: Any) -> None:
    page = watched.page
    _open_record(site, watched, "Hostile 0")
    url = page.url
    # A second tab holds the page as it is now: its ETag goes stale.
    other = browser.new_context().new_page()
    other.goto(url)
    page.select_option("#new-status", "pending")
    with page.expect_navigation():
        page.click(".status-form button")
    assert page.url == url  # 303 back to the record
    assert page.locator("#status").inner_text() == "pending"
    assert "local user" in page.locator(".audit").inner_text()
    assert "pending" in page.locator(".audit").inner_text()
    # The stale tab is told, and changes nothing.
    other.select_option("#new-status", "closed")
    other.click(".status-form button")
    assert "changed since" in other.locator(".notice").inner_text()
    assert other.locator("#status").inner_text() == "pending"
    other.context.close()
    page.reload()
    assert page.locator("#status").inner_text() == "pending"
    assert watched.dialogs == [] and watched.foreign == []


def test_a_change_without_the_pages_token_or_origin_is_refused(
    site: Site, watched: Watched
) -> None:
    page = watched.page
    _open_record(site, watched, "Hostile 1:")
    action = page.locator(".status-form").evaluate("f => f.action")
    etag = page.locator("input[name=etag]").input_value()
    token = page.locator(".status-form input[name=csrf]").input_value()

    def post(form: str, origin: str | None) -> int:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if origin is not None:
            headers["Origin"] = origin
        request = urllib.request.Request(action, data=form.encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    form = f"status=closed&etag={etag}&csrf="
    assert post(form + "0" * 64, site.base) == 403  # a forged token
    assert post(form + token, None) == 403  # no Origin
    assert post(form + token, "http://evil.example") == 403  # another site
    page.reload()
    assert page.locator("#status").inner_text() == "new"
    # The page's own form, sent as the browser would, is taken (303 to the record).
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(
        action,
        data=(form + token).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": site.base},
    )
    try:
        opener.open(request, timeout=10)
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 303
    page.reload()
    assert page.locator("#status").inner_text() == "closed"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _record_href(site: Site, watched: Watched, title_part: str) -> str:
    watched.page.goto(f"{site.console}/records?q={quote(title_part)}")
    (href,) = watched.page.locator("table.records td.title a").evaluate_all(
        "e => e.map(a => a.href)"
    )
    return str(href)


def test_browser_reply_from_a_record(site: Site, watched: Watched) -> None:
    assert site.sink is not None and site.host is not None
    page = watched.page
    _open_record(site, watched, "Hostile 4:")
    url = page.url
    display_id = page.locator(".rid").inner_text()
    # To defaults to the record's contact, as the reply API's does.
    assert page.locator("#reply-to").input_value() == "mallory4@evil.example"
    # A recipient that is no address: refused with the reason, the text kept, nothing queued.
    text = "Здравствуйте! 你好，我们已收到。 Γειά σας."
    page.fill("#reply-to", "not an address")
    page.fill("#reply-body", text)
    with page.expect_response(re.compile(r"/reply$")) as refused:
        page.click(".reply-form button")
    assert refused.value.status == 422, page.content()[:2000]
    assert "not an address" in page.locator(".notice").inner_text()
    assert page.locator("#reply-body").input_value() == text
    site.host.drain()
    assert [m for m in site.sink.messages() if display_id in str(m["Subject"])] == []
    # The reply as meant: queued, said so, then sent with the record's token in its subject.
    page.fill("#reply-to", '"Mallory, 4" <mallory4@evil.example>')
    page.fill("#reply-cc", "Ольга <olga@example.ru>")
    with page.expect_navigation():
        page.click(".reply-form button")
    assert page.url.startswith(url) and "queued" in page.locator(".notice").inner_text()
    site.host.drain()
    (sent,) = [m for m in site.sink.messages() if f"[{display_id}]" in str(m["Subject"])]
    assert str(sent["To"]) == "mallory4@evil.example"
    assert "olga@example.ru" in str(sent["Cc"])
    assert str(sent["Subject"]).startswith("Re: Hostile 4:")
    assert sent["In-Reply-To"] == "<console-4@evil.example>"
    # Our signed Message-ID: a reply to it finds this record even without the token.
    signed = verify_message_id(str(sent["Message-ID"]).strip("<>"), site.context.signing_keys)
    assert signed is not None and signed.type == "case"
    assert (
        signed.key
        == resolve(site.context.stores, site.context.config, "case", display_id)["RowKey"]
    )
    (raw,) = [r for _, _, r in site.sink.received if f"[{display_id}]".encode() in r]
    plain, _ = mail_bodies(raw)
    assert plain is not None and text in plain
    page.goto(url)
    directions = page.locator(".timeline .dir").all_inner_texts()
    assert directions.count("Out") == 1
    out = page.locator(".timeline .entry.out")
    assert text in out.locator(".text").inner_text()
    assert "reply" in page.locator(".audit").inner_text()
    assert watched.dialogs == [] and watched.foreign == []


def test_browser_file_a_mail_on_another_record(site: Site, watched: Watched) -> None:
    assert site.host is not None
    page = watched.page
    target = _record_href(site, watched, "Hostile 6:")
    target_id = target.rsplit("/", 1)[1]
    mail_url = _hostile_mail_url(site, watched, 5)
    page.goto(mail_url)
    # No such record, or this very record: told on the mail's page, nothing filed.
    page.fill("#refile-id", "CASE-99999")
    page.click(".refile-form button")
    assert "99999" in page.locator(".notice").inner_text()
    here = mail_url.split("/mail/", 1)[0].rsplit("/", 1)[1]
    page.fill("#refile-id", here)
    page.click(".refile-form button")
    assert "already on this record" in page.locator(".notice").inner_text()
    page.select_option("#refile-type", "case")
    page.fill("#refile-id", target_id)
    with page.expect_navigation():
        page.click(".refile-form button")
    assert page.url.startswith(target) and "filed here" in page.locator(".notice").inner_text()
    site.host.drain()
    page.goto(target)
    subjects = page.locator(".timeline .subject").all_inner_texts()
    assert any(s.startswith("Hostile 5:") for s in subjects), subjects
    assert any(s.startswith("Hostile 6:") for s in subjects), subjects
    assert "file_message" in page.locator(".audit").inner_text()
    assert watched.dialogs == [] and watched.foreign == []


def test_browser_see_a_failing_mailbox_and_enable_it(site: Site, watched: Watched) -> None:
    page = watched.page
    page.goto(f"{site.console}/records")
    page.click("nav a:text('Operations')")
    row = page.locator("tr.mailbox[data-mailbox=broken]")
    assert row.locator(".mailbox-status").inner_text() == "disabled"
    error = row.locator(".error").inner_text()
    assert "Disabled: 1 failed polls" in error and "127.0.0.1" in error, error
    # Beside the error, the setting to fix (services/failures.py words it).
    fix = row.locator(".fix").inner_text()
    assert fix.startswith("To fix: check mailboxes.broken.host and mailboxes.broken.port"), fix
    ok = page.locator("tr.mailbox[data-mailbox=hostile] .mailbox-status").inner_text()
    assert ok == "ok"
    assert page.locator("tr.mailbox[data-mailbox=hostile] .enable-form").count() == 0
    depths = page.locator(".poison .depth").all_inner_texts()
    assert depths and all(d == "0" for d in depths), depths
    page.set_viewport_size({"width": 1000, "height": 700})
    page.screenshot(path=str(SHOTS / "console-operations.png"), full_page=True)
    with page.expect_navigation():
        row.locator(".enable-form button").click()
    assert "enabled" in page.locator(".notice").inner_text()
    row = page.locator("tr.mailbox[data-mailbox=broken]")
    assert row.locator(".mailbox-status").inner_text() != "disabled"
    assert row.locator(".enable-form").count() == 0
    assert watched.dialogs == [] and watched.foreign == []


def test_browser_replay_a_poison_message(site: Site, watched: Watched) -> None:
    stores = site.context.stores
    body = '{"event": "запись-1"}'.encode()
    send_to_poison(
        stores,
        queue=DELIVERIES,
        stage="deliveries",
        body=body,
        reason="вебхук не ответил: 503",
        dequeue_count=5,
        now=datetime(2026, 12, 7, 10, 0, tzinfo=UTC),
    )
    page = watched.page
    page.goto(f"{site.console}/operations")
    queue = page.locator(f"tr.poison-queue[data-queue={DELIVERIES}]")
    assert queue.locator(".depth").inner_text() == "1"
    assert "вебхук не ответил: 503" in page.locator(".poison-message .reason").all_inner_texts()
    try:
        with page.expect_navigation():
            queue.locator(".replay-form button").click()
        assert "went back to their queue" in page.locator(".notice").inner_text()
        assert page.locator(".poison-message").count() == 0
        assert stores.queues.peek(poison(DELIVERIES)) == []
        assert stores.queues.peek(DELIVERIES) == [body]
        assert watched.dialogs == [] and watched.foreign == []
    finally:
        stores.queues.clear(DELIVERIES)  # not for the other tests' drains
        stores.queues.clear(poison(DELIVERIES))


def _dead_delivery(site: Site, title: str) -> Delivery:
    """A delivery the real deliver stage dead-letters: a webhook whose secret is not set."""
    hook = Webhook(name="crm", url="https://crm.example/hook", secret_setting="CONSOLE_CRM_SECRET")
    config = site.context.config.model_copy(update={"events": Events(webhooks=(hook,))})
    event = Event(
        id=event_id("console-test", title),
        type="record.created",
        occurred_at=NOW,
        display_id="CASE-Ж7",
        data={"title": title},
    )
    delivery = Delivery(event=event, webhook="crm")
    result = deliver(site.context.stores, config, encode(delivery), now=NOW, environ={})
    assert result.outcome == "dead", result
    return delivery


def test_browser_replay_a_dead_lettered_webhook_delivery(site: Site, watched: Watched) -> None:
    stores = site.context.stores
    first = _dead_delivery(site, "Заявка №7")
    other = _dead_delivery(site, "請求書 8")
    page = watched.page
    try:
        page.goto(f"{site.console}/operations")
        row = page.locator(f"tr.dead-delivery[data-event='{first.event.id}']")
        assert row.locator("td").nth(1).inner_text() == "crm"
        reason = row.locator(".reason").inner_text()
        assert "app setting CONSOLE_CRM_SECRET (secret) is not set" in reason, reason
        assert page.locator("tr.dead-delivery").count() == 2
        with page.expect_navigation():
            row.locator(".delivery-replay-form button").click()
        assert "queued again" in page.locator(".notice").inner_text()
        # Only the one replayed: it left the list, the other stays dead.
        assert page.locator(f"tr.dead-delivery[data-event='{first.event.id}']").count() == 0
        assert page.locator(f"tr.dead-delivery[data-event='{other.event.id}']").count() == 1
        table = stores.table(DELIVERY_LOG)
        replayed = delivery_log.get(table, first.event.id, "crm")
        assert replayed is not None and replayed["Status"] == "replayed"
        still = delivery_log.get(table, other.event.id, "crm")
        assert still is not None and still["Status"] == "dead"
        (queued,) = stores.queues.peek(DELIVERIES, 32)
        again = decode(queued, Delivery)
        assert again.event == first.event and again.webhook == "crm" and again.attempt == 1
        acts = [a for a in day_trail(stores, datetime.now(UTC)) if a["Action"] == "replay_delivery"]
        assert any(first.event.id in str(a["Detail"]) for a in acts), acts
        assert watched.dialogs == [] and watched.foreign == []
    finally:
        stores.queues.clear(DELIVERIES)  # not for the other tests' drains
        for delivery in (first, other):
            table = stores.table(DELIVERY_LOG)
            table.delete(delivery.event.id, "crm")


def test_browser_look_up_a_message_by_message_id_and_by_source_id(
    site: Site, watched: Watched
) -> None:
    page = watched.page
    stores = site.context.stores
    known = message_status(stores, "<invoice-ru@example.ru>")
    assert known is not None and known["filed"] is not None
    page.goto(f"{site.console}/operations")
    page.fill(".lookup-form input[name=message_id]", "<invoice-ru@example.ru>")
    page.click(".lookup-form button")
    found = page.locator(".message-found")
    assert found.count() == 1
    assert found.locator(".message-status").inner_text() == "filed"
    assert found.locator(".filed-on").inner_text() == known["filed"]["display_id"]
    trail = found.locator(".trail li").all_inner_texts()
    assert trail and trail == known["filed"]["reasons"]
    page.set_viewport_size({"width": 1000, "height": 700})
    page.screenshot(path=str(SHOTS / "console-message-lookup.png"))
    found.locator(".filed-on").click()
    assert page.locator("h1").inner_text().endswith(ATTACHMENT_SUBJECT)

    # By its source id in its mailbox (here a file's path), as typed.
    source_id = known["filed"]["source_id"]
    page.goto(f"{site.console}/operations")
    page.fill(".lookup-form input[name=source_id]", source_id)
    page.select_option(".lookup-form select[name=mailbox]", known["filed"]["mailbox"])
    page.click(".lookup-form button")
    found = page.locator(".message-found")
    assert found.count() == 1
    assert found.locator(".message-status").inner_text() == "filed"
    assert found.locator(".filed-on").inner_text() == known["filed"]["display_id"]

    # What is typed is data: quotes, filter syntax, markup and other scripts find nothing.
    for typed in (
        "' or PartitionKey ne '",
        "<x@y> <script>alert('pwned-lookup')</script>",
        "<счёт-№7@пример.рф>",
    ):
        page.goto(f"{site.console}/operations")
        page.fill(".lookup-form input[name=message_id]", typed)
        page.click(".lookup-form button")
        assert page.locator(".lookup-none").count() == 1, typed
        assert page.locator(".lookup-form input[name=message_id]").input_value() == typed
    page.goto(f"{site.console}/operations")
    page.fill(".lookup-form input[name=source_id]", "../../etc/passwd' or ''='")
    page.click(".lookup-form button")
    assert page.locator(".lookup-none").count() == 1
    page.fill(".lookup-form input[name=message_id]", "<invoice-ru@example.ru>")
    page.fill(".lookup-form input[name=source_id]", source_id)
    page.click(".lookup-form button")
    assert "not both" in page.locator(".lookup-error").inner_text()
    assert page.locator(".message-found").count() == 0
    assert watched.dialogs == [] and watched.foreign == []


# --- hostile mail -----------------------------------------------------------------------------


def test_browser_hostile_mail_runs_nothing_and_loads_nothing_foreign(
    site: Site, watched: Watched
) -> None:
    page = watched.page
    page.goto(f"{site.console}/records?q=Hostile")
    links = page.locator("table.records td.title a").evaluate_all(
        "e => e.map(a => [a.textContent, a.href])"
    )
    assert len(links) == len(HOSTILE)
    for title, href in sorted(links):
        n = int(re.match(r"Hostile (\d+):", title).group(1))  # type: ignore[union-attr]
        # The mail's own page: the record's link, then the message's key.
        with page.expect_response(re.compile(r"/body$")) as framed:
            response = page.goto(f"{href}/mail/{id_key(f'console-{n}@evil.example')}")
        assert response is not None and response.status == 200, title
        policy = framed.value.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "sandbox" in policy
        assert "script-src" not in policy and "img-src data:;" in policy
        # The subject is shown as text, not run.
        assert "<script>alert('pwned-subject')</script>" in page.locator("h1").inner_text()
        frame = page.frame_locator("iframe.mail")
        # Whatever link is left in it is clicked: it goes nowhere off the host unasked.
        for link in frame.locator("a").all():
            link.click(timeout=1000, no_wait_after=True)
        # The document as the browser holds it: nothing active survived.
        (mail_frame,) = [f for f in page.frames if f.url.endswith("/body")]
        body = mail_frame.content().split("</head>", 1)[1]
        for word in HOSTILE_WORDS:
            assert word not in body, (title, word)
    assert watched.dialogs == []
    assert watched.foreign == [], watched.foreign
    assert [u for u in watched.requests if "pwned" in u] == []


def _hostile_mail_url(site: Site, watched: Watched, n: int) -> str:
    """The page of hostile mail `n`: its record found by the text filter, then its key."""
    watched.page.goto(f"{site.console}/records?q=Hostile+{n}:")
    (href,) = watched.page.locator("table.records td.title a").evaluate_all(
        "e => e.map(a => a.href)"
    )
    return f"{href}/mail/{id_key(f'console-{n}@evil.example')}"


def test_browser_remote_images_load_only_after_the_click(site: Site, watched: Watched) -> None:
    page = watched.page
    page.goto(_hostile_mail_url(site, watched, REMOTE_IMAGE))  # waits for the frame's load
    assert page.frame_locator("iframe.mail").locator("img[src]").count() == 0  # no address
    assert watched.foreign == []
    with page.expect_navigation():  # the page, its frame and the frame's images loaded
        page.click("a#show-images")
    assert page.frame_locator("iframe.mail").locator("img[src^='http://']").count() == 1
    assert watched.foreign == [f"http://images.evil.example/pwned{REMOTE_IMAGE}.png"]
    # Per mail: another mail (the CSS url() one) still loads nothing from elsewhere.
    watched.foreign.clear()
    page.goto(_hostile_mail_url(site, watched, 3))
    assert watched.foreign == [] and watched.dialogs == []


def test_browser_shows_the_mails_own_cid_images_and_nothing_else(
    site: Site, watched: Watched
) -> None:
    page = watched.page
    page.goto(_hostile_mail_url(site, watched, CID_IMAGES))
    frame = page.frame_locator("iframe.mail")
    own = frame.locator("img[alt=logo]")  # nh3 keeps no id, the alt text is there
    assert (own.get_attribute("src") or "").startswith("data:image/png;base64,")
    # Drawn from the mail's own bytes, at their size.
    assert own.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]") == [True, 12, 8]
    assert frame.locator("img[alt=svg]").get_attribute("src") is None
    assert frame.locator("img[alt=missing]").get_attribute("src") is None
    assert frame.locator("a:text('cid link')").get_attribute("href") is None
    assert [u for u in watched.requests if u.lower().startswith("cid:")] == []
    assert watched.foreign == [] and watched.dialogs == []


def test_a_mail_frame_opened_on_its_own_still_runs_nothing(site: Site, watched: Watched) -> None:
    page = watched.page
    page.goto(_hostile_mail_url(site, watched, 0))  # the <script> mail
    src = page.locator("iframe.mail").get_attribute("src")
    assert src and src.endswith("/body")
    response = page.goto(site.base + src)
    assert response is not None and "sandbox" in response.headers["content-security-policy"]
    page.goto(site.base + src + "?images=1")
    assert watched.dialogs == [] and watched.foreign == []
    assert [u for u in watched.requests if "pwned" in u] == []


def test_browser_pages_are_usable_at_360_px(site: Site, watched: Watched) -> None:
    page = watched.page
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{site.console}/records")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360 + 1
    # Keyboard: the filter form and the first record are reachable with Tab.
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.tagName")
    assert re.fullmatch("A|SELECT|INPUT|BUTTON", focused)
    # The console's home leads to the records.
    page.goto(f"{site.base}/api/console")
    assert page.url == f"{site.console}/records"


def _own_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # UDP: picks the route, sends nothing
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


def test_the_console_answers_only_callers_on_this_machine(site: Site) -> None:
    """Served on every interface, a caller from the network is refused even when it names
    127.0.0.1 in Host (which the local host's own check accepts), while the API answers it."""
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback")
    assert site.host is not None
    server = LocalHttpServer(("0.0.0.0", free_port()), site.host, route_prefix="api")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        spoofed = {"Host": f"127.0.0.1:{port}"}
        status, headers, body = _get(f"http://{address}:{port}/api/console/records", spoofed)
        assert status == 403 and "127.0.0.1" in body.decode()
        assert headers["content-type"].startswith("text/html")
        # The same for a caller who sends the peer header itself.
        forged = {**spoofed, "X-Mailfiler-Peer": "127.0.0.1"}
        assert _get(f"http://{address}:{port}/api/console/records", forged)[0] == 403
        assert _get(f"http://{address}:{port}/api/records", spoofed)[0] == 200
        assert _get(f"http://127.0.0.1:{port}/api/console/records")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
