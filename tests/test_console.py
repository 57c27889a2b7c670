"""The console's pieces without a browser: who may use it (the local peer, App Service
Authentication's principal and its app roles), the CSRF guard, the mail sanitiser and the
download headers."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlencode

import azure.functions as func
import pytest

from shared.console import counts
from shared.console.access import (
    ADMIN,
    AGENT,
    CSRF_SETTING,
    PEER_HEADER,
    READ,
    Principal,
    Refused,
    check_change,
    csrf_token,
    principal,
)
from shared.console.mailview import (
    MAX_INLINE_IMAGE,
    document,
    has_remote_images,
    inline_images,
    sanitise,
)
from shared.core.config.events import Events, Webhook
from shared.core.contracts import Event
from shared.core.mime import mail_bodies
from shared.services.audit import Actor, record_trail
from shared.services.context import AppContext
from shared.services.downloads import ascii_fallback, content_disposition, safe_type
from shared.services.records import all_records, representation, update_record
from shared.services.webhooks import Delivery
from shared.stages.deliveries import deliver
from shared.stages.polls import poll_all
from shared.store import delivery_log
from shared.store.queues import encode
from shared.store.records import ref_of
from shared.store.stores import DELIVERIES, DELIVERY_LOG, FILING, INBOUND, OUTBOUND, poison

from .helpers import app_functions, local_host

HOST = "127.0.0.1:7071"


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    monkeypatch.delenv("WEBSITE_INSTANCE_ID", raising=False)


@pytest.fixture
def easy_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc")


def _principal(name: str, roles: list[str], **extra: Any) -> str:
    claims = [{"typ": "name", "val": name}] + [{"typ": "roles", "val": r} for r in roles]
    data = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles", **extra}
    return base64.b64encode(json.dumps(data).encode()).decode()


@pytest.mark.usefixtures("local")
@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "127.0.0.53"])
def test_locally_this_machine_is_a_user_with_every_role(peer: str) -> None:
    who = principal({PEER_HEADER: peer, "host": HOST})
    assert who.source == "local" and all(who.can(r) for r in (READ, AGENT, ADMIN))


@pytest.mark.usefixtures("local")
@pytest.mark.parametrize("peer", [None, "", "192.168.1.20", "10.0.0.1", "::ffff:8.8.8.8", "x"])
def test_locally_any_other_peer_is_refused_whatever_its_host_header(peer: str | None) -> None:
    headers = {"host": HOST, "x-ms-client-principal": _principal("Eve", [ADMIN])}
    if peer is not None:
        headers[PEER_HEADER] = peer
    with pytest.raises(Refused) as refused:
        principal(headers)
    assert refused.value.status == 403 and "127.0.0.1" in refused.value.message


def test_in_azure_without_app_service_authentication_everyone_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "abc")
    headers = {PEER_HEADER: "127.0.0.1", "x-ms-client-principal": _principal("Eve", [ADMIN])}
    with pytest.raises(Refused) as refused:
        principal(headers)
    assert refused.value.status == 403 and "App Service Authentication" in refused.value.message


@pytest.mark.usefixtures("easy_auth")
def test_the_signed_in_principal_and_its_app_roles() -> None:
    who = principal({"x-ms-client-principal": _principal("Анна Müller 山田", [AGENT, "Other"])})
    assert who == Principal("Анна Müller 山田", frozenset({AGENT}), "entra")
    assert who.can(READ) and who.can(AGENT) and not who.can(ADMIN)
    reader = principal({"x-ms-client-principal": _principal("r", [READ])})
    assert reader.can(READ) and not reader.can(AGENT)


@pytest.mark.usefixtures("easy_auth")
@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("", 401),
        ("not base64!", 400),
        (base64.b64encode(b"[1, 2]").decode(), 400),
        (base64.b64encode(b'{"claims": "x"}').decode(), 400),
        (_principal("no roles", []), 403),
        (_principal("unknown roles", ["Mailfiler.Root", "admin"]), 403),
        ("A" * 20_000, 400),
    ],
)
def test_a_missing_bad_or_roleless_principal_is_refused(header: str | None, status: int) -> None:
    headers = {} if header is None else {"x-ms-client-principal": header}
    with pytest.raises(Refused) as refused:
        principal(headers)
    assert refused.value.status == status


def test_a_change_needs_our_origin_our_token_and_the_role() -> None:
    who = Principal("local user", frozenset({READ, AGENT, ADMIN}), "local")
    token = csrf_token(who)
    ok = {"host": HOST, "origin": f"http://{HOST}"}
    check_change(ok, token, who, AGENT)  # no exception
    for headers, sent in [
        ({"host": HOST}, token),
        ({"host": HOST, "origin": "null"}, token),
        ({"host": HOST, "origin": "http://evil.example"}, token),
        ({"host": HOST, "origin": f"https://{HOST}"}, token),
        (ok, None),
        (ok, ""),
        (ok, token[:-1] + ("0" if token[-1] != "0" else "1")),
        (ok, csrf_token(Principal("someone else", who.roles, "local"))),
    ]:
        with pytest.raises(Refused) as refused:
            check_change(headers, sent, who, AGENT)
        assert refused.value.status == 403, (headers, sent)
    reader = Principal("r", frozenset({READ}), "entra")
    with pytest.raises(Refused, match=r"Mailfiler\.Agent"):
        check_change(
            {"host": "x.example", "origin": "https://x.example"}, csrf_token(reader), reader, AGENT
        )


def _token_elsewhere(setting: str | None) -> str:
    """The CSRF token another process (another instance of the app) gives Анна."""
    env = {k: v for k, v in os.environ.items() if k != CSRF_SETTING}
    if setting is not None:
        env[CSRF_SETTING] = setting
    code = (
        "from shared.console.access import Principal, csrf_token\n"
        "print(csrf_token(Principal('Анна', frozenset({'Mailfiler.Agent'}), 'entra')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_instances_sharing_the_csrf_setting_take_each_others_forms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shared = secrets.token_hex(32)
    monkeypatch.setenv(CSRF_SETTING, shared)
    who = Principal("Анна", frozenset({AGENT}), "entra")
    here = csrf_token(who)
    assert _token_elsewhere(shared) == here
    site = {"host": "x.example", "origin": "https://x.example"}
    check_change(site, _token_elsewhere(shared), who, AGENT)  # no exception
    with pytest.raises(Refused):
        check_change(site, _token_elsewhere(secrets.token_hex(32)), who, AGENT)
    # Without a usable setting each process has its own key: missing, short, or a Key Vault
    # reference the platform left unresolved (its text is public).
    unresolved = "@Microsoft.KeyVault(VaultName=kv-x;SecretName=mailfiler-console-csrf-secret)"
    for setting in (None, "short", unresolved):
        first, second = _token_elsewhere(setting), _token_elsewhere(setting)
        assert first != second and here not in (first, second), setting


HOSTILE_HTML = """<p style="color:red;background:url(http://evil.example/a)">Hi Ünal, 你好</p>
<script>alert(1)</script><img src=x onerror=alert(2)><a href="javascript:alert(3)">j</a>
<a href="https://example.org/ok">ok</a><img src="http://img.evil.example/t.png" alt="t">
<img src="data:image/png;base64,iVBORw0KGgo="><img src="data:image/svg+xml;base64,PHN2Zz4=">
<svg onload=alert(4)><script>alert(5)</script></svg><form action=/x><input name=a></form>
<meta http-equiv=refresh content="0;url=http://evil.example"><base href="http://evil.example/">
<object data="http://evil.example/o"></object><embed src="http://evil.example/e">
<style>@import url(http://evil.example/s.css)</style><iframe src="http://evil.example/f"></iframe>
<link rel=stylesheet href="http://evil.example/l.css"><table bgcolor=red><tr><td>cell</td></tr>"""


def test_the_sanitiser_keeps_text_and_drops_everything_active() -> None:
    clean = sanitise(HOSTILE_HTML, remote_images=False)
    assert "Hi Ünal, 你好" in clean and "cell" in clean
    assert 'href="https://example.org/ok"' in clean and 'rel="noopener noreferrer"' in clean
    assert 'style="color:red"' in clean
    assert '<img src="data:image/png;base64,iVBORw0KGgo=">' in clean
    for word in (
        "<script",
        "alert",
        "onerror",
        "onload",
        "javascript:",
        "url(",
        "<form",
        "<input",
        "<meta",
        "<base",
        "<object",
        "<embed",
        "<iframe",
        "<link",
        "<style",
        "<svg",
        "evil.example",
        "svg+xml",
    ):
        assert word not in clean, word
    assert has_remote_images(HOSTILE_HTML)
    shown = sanitise(HOSTILE_HTML, remote_images=True)
    assert 'src="http://img.evil.example/t.png"' in shown
    assert shown.count("evil.example") == 1  # the image asked for, nothing else


def test_the_frame_document_carries_its_policy_and_shows_text_mail_as_text() -> None:
    doc = document("<b>not markup</b> Привет", None, remote_images=False)
    assert "&lt;b&gt;not markup&lt;/b&gt; Привет" in doc
    assert "default-src &#x27;none&#x27;; img-src data:;" in doc
    assert "script-src" not in doc
    with_images = document(None, "<p>x</p>", remote_images=True)
    assert "img-src data: http: https:;" in with_images


def test_cid_images_are_the_mails_own_image_parts_as_data_urls() -> None:
    logo = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    # Outlook's kind of Content-ID, referred to URL-encoded (RFC 2392) and in another case.
    markup = (
        '<p>Привет, 你好</p><img src="cid:image001%2Epng@01D9E3A1.5B5C4F60" alt=a>'
        '<img src="CID:IMAGE001.PNG@01d9e3a1.5b5c4f60" alt=b><img src="cid:svg@x" alt=c>'
        '<img src="cid:big@x" alt=d><img src="cid:nowhere@x" alt=e><a href="cid:svg@x">l</a>'
    )
    msg = EmailMessage()
    msg["Subject"] = "cid"
    msg.set_content("text")
    msg.add_alternative(markup, subtype="html")
    html_part = msg.get_body(("html",))
    assert html_part is not None
    html_part.add_related(logo, "image", "png", cid="<image001.png@01D9E3A1.5B5C4F60>")
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    html_part.add_related(svg, "image", "svg+xml", cid="<svg@x>")
    html_part.add_related(b"\0" * (MAX_INLINE_IMAGE + 1), "image", "gif", cid="<big@x>")
    inline = inline_images(bytes(msg))
    uri = "data:image/png;base64," + base64.b64encode(logo).decode()
    assert inline == {"image001.png@01D9E3A1.5B5C4F60": uri}
    shown = document(None, markup, False, inline)
    assert shown.count(f'src="{uri}"') == 2  # URL-encoded and in other case, both found
    assert "cid:" not in shown.lower() and "<svg" not in shown and "<script" not in shown
    # Without the mail's parts (or with remote images on), a cid: image has no source at all.
    assert "src=" not in sanitise(markup, True)


def test_mail_bodies_finds_the_text_and_the_html_not_an_attachment() -> None:
    msg = EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("plain: Grüße")
    msg.add_alternative("<p>html: こんにちは</p>", subtype="html")
    msg.add_attachment(b"<p>attached</p>", maintype="text", subtype="html", filename="a.html")
    plain, html = mail_bodies(bytes(msg))
    assert plain is not None and plain.strip() == "plain: Grüße"
    assert html is not None and "こんにちは" in html and "attached" not in html
    plain, html = mail_bodies(b"\xff\x00 not a mail")  # never raises
    assert html is None and plain is not None and "not a mail" in plain


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", 'attachment; filename="report.pdf"'),
        (
            "Счёт №7.pdf",
            "attachment; filename=\"____ No7.pdf\"; filename*=UTF-8''"
            "%D0%A1%D1%87%D1%91%D1%82%20%E2%84%967.pdf",
        ),
        ("Crème brûlée.txt", None),
        ('a"b\\c\r\nSet-Cookie: x.txt', None),
        ("../../etc/passwd", None),
        ("", 'attachment; filename="attachment"'),
    ],
)
def test_content_disposition_is_ascii_safe_and_keeps_any_script(
    name: str, expected: str | None
) -> None:
    value = content_disposition(name)
    assert value.isascii() and "\r" not in value and "\n" not in value
    assert value.startswith("attachment; filename=")
    if expected is not None:
        assert value == expected
    assert "/" not in value.split("filename=", 1)[1].split(";", 1)[0]
    assert ascii_fallback("Crème brûlée.txt") == "Creme brulee.txt"


def test_only_types_a_browser_cannot_run_keep_their_type() -> None:
    assert safe_type("application/pdf") == "application/pdf"
    assert safe_type("IMAGE/PNG; name=x.png") == "image/png"
    for risky in ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "", None):
        assert safe_type(risky) == "application/octet-stream"


# --- roles over HTTP, as App Service Authentication hands them over -----------------------


SITE = "mailfiler.azurewebsites.net"


def _post(
    function: str, route: dict[str, str], who: Principal, fields: dict[str, str]
) -> tuple[int, str]:
    """A console form as the Functions host hands it over behind App Service Authentication
    (which terminates TLS and adds the principal): our Origin, the page's token."""
    registered = next(f for f in app_functions() if f.name == function)
    request = func.HttpRequest(
        method="POST",
        url=f"https://{SITE}/api/console/...",
        headers={
            "Host": SITE,
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": f"https://{SITE}",
            "X-MS-CLIENT-PRINCIPAL": _principal(who.name, sorted(who.roles)),
        },
        route_params=route,
        body=urlencode({**fields, "csrf": csrf_token(who)}).encode(),
    )
    response = registered.invoke(request)
    return int(response.status_code), response.get_body().decode()


@pytest.mark.azurite
@pytest.mark.usefixtures("easy_auth")
def test_roles_reader_cannot_reply_or_refile_agent_cannot_enable_or_replay(
    context: AppContext,
) -> None:
    poll_all(context, datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    local_host(context.stores.queues).drain()
    first, second = sorted(all_records(context.stores), key=lambda r: r["Number"])[:2]
    entry = representation(context.stores, first)["timeline"][0]
    reader = Principal("Рита Reader", frozenset({READ}), "entra")
    agent = Principal("Agent 山田", frozenset({AGENT}), "entra")
    record = {"type": "case", "id": first["DisplayId"]}
    reply = ("console_record_reply", record, {"body": "Ответ", "to": "olga@example.ru"})
    refile = (
        "console_mail_file",
        {**record, "key": entry["message_key"]},
        {"target_type": "case", "target_id": second["DisplayId"]},
    )
    for function, route, fields in (reply, refile):
        status, page = _post(function, route, reader, fields)
        assert status == 403 and "Mailfiler.Agent" in page, (function, page[:500])
    assert context.stores.queues.peek(OUTBOUND) == []
    assert context.stores.queues.peek(FILING) == []
    # An agent's same forms are taken (the sample's mailbox cannot send: told so, as 422).
    status, page = _post(reply[0], reply[1], agent, reply[2])
    assert status == 422 and "cannot send: give it an smtp block" in page, page
    assert _post(refile[0], refile[1], agent, refile[2])[0] == 303
    (queued,) = context.stores.queues.peek(FILING)
    assert entry["message_key"] in queued.decode()
    # Enabling a mailbox is the Admin's: an agent is refused, an admin is not.
    enable = "console_mailbox_enable"
    status, page = _post(enable, {"name": "sample"}, agent, {})
    assert status == 403 and "Mailfiler.Admin" in page
    admin = Principal("Admin Ана", frozenset({ADMIN}), "entra")
    assert _post(enable, {"name": "sample"}, admin, {})[0] == 303
    assert _post(enable, {"name": "nope"}, admin, {})[0] == 404
    # Replaying a poison queue is the Admin's too; the message goes back to its queue as it was.
    body = b'{"mailbox": "sample", "source_id": "\xd0\xbf\xd0\xb8\xd1\x81\xd1\x8c\xd0\xbc\xd0\xbe"}'
    context.stores.queues.send_bytes(poison(INBOUND), body)
    replay_queue = "console_poison_replay"
    status, page = _post(replay_queue, {"queue": INBOUND}, agent, {})
    assert status == 403 and "Mailfiler.Admin" in page
    assert context.stores.queues.peek(poison(INBOUND)) == [body]
    assert _post(replay_queue, {"queue": "no-such-queue"}, admin, {})[0] == 404
    assert _post(replay_queue, {"queue": INBOUND}, admin, {})[0] == 303
    assert context.stores.queues.peek(poison(INBOUND)) == []
    assert body in context.stores.queues.peek(INBOUND, 32)
    trail = record_trail(context.stores, ref_of(second))
    actions = [(a.get("Actor"), a.get("Action")) for a in trail]
    assert ("Agent 山田", "file_message") in actions
    assert all(name != "Рита Reader" for name, _ in actions)


@pytest.mark.azurite
@pytest.mark.usefixtures("easy_auth")
def test_replaying_a_dead_delivery_is_the_admins_and_names_a_real_one(
    context: AppContext,
) -> None:
    hook = Webhook(name="crm", url="https://crm.example/hook", secret_setting="NO_SUCH_SECRET")
    config = context.config.model_copy(update={"events": Events(webhooks=(hook,))})
    event = Event(
        id="0123456789abcdef0123456789abcdef",
        type="message.filed",
        occurred_at=datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        data={"subject": "Тема 件名"},
    )
    body = encode(Delivery(event=event, webhook="crm"))
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert deliver(context.stores, config, body, now=now, environ={}).outcome == "dead"
    replay = "console_delivery_replay"
    fields = {"event": event.id, "webhook": "crm"}
    for who in (
        Principal("Рита Reader", frozenset({READ}), "entra"),
        Principal("Agent 山田", frozenset({AGENT}), "entra"),
    ):
        status, page = _post(replay, {}, who, fields)
        assert status == 403 and "Mailfiler.Admin" in page, page[:500]
    table = context.stores.table(DELIVERY_LOG)
    row = delivery_log.get(table, event.id, "crm")
    assert row is not None and row["Status"] == "dead"
    assert context.stores.queues.peek(DELIVERIES) == []
    admin = Principal("Admin Ана", frozenset({ADMIN}), "entra")
    # A delivery that is not there, or not named as one, changes nothing.
    for bad, status in (
        ({"event": event.id, "webhook": "other"}, 404),
        ({"event": "f" * 32, "webhook": "crm"}, 404),
        ({"event": "' or Status ne '", "webhook": "crm"}, 400),
        ({"event": event.id, "webhook": "crm' or ''='"}, 400),
        ({"webhook": "crm"}, 400),
    ):
        assert _post(replay, {}, admin, bad)[0] == status, bad
    assert context.stores.queues.peek(DELIVERIES) == []
    assert _post(replay, {}, admin, fields)[0] == 303
    row = delivery_log.get(table, event.id, "crm")
    assert row is not None and row["Status"] == "replayed"
    (queued,) = context.stores.queues.peek(DELIVERIES)
    assert b"0123456789abcdef0123456789abcdef" in queued
    # Replayed, it is no longer dead: a second replay of it finds nothing.
    assert _post(replay, {}, admin, fields)[0] == 404
    assert len(context.stores.queues.peek(DELIVERIES)) == 1


@pytest.mark.azurite
@pytest.mark.usefixtures("easy_auth")
def test_counts_per_status_are_kept_and_recounted_after_a_change_here(
    context: AppContext,
) -> None:
    poll_all(context, datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    local_host(context.stores.queues).drain()
    stores = context.stores

    def truth(mailbox: str = "") -> list[tuple[str, int]]:
        found = Counter(
            str(r.get("Status")) for r in all_records(stores) if mailbox in ("", r.get("Mailbox"))
        )
        return sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))

    everything = counts.scope_of({})
    found, age = counts.status_counts(stores, everything)
    assert (found, age) == (truth(), 0.0)
    assert counts.status_counts(stores, counts.scope_of({"mailbox": "sample"}))[0] == truth(
        "sample"
    )
    assert counts.status_counts(stores, counts.scope_of({"mailbox": "nowhere"}))[0] == []
    # A change made elsewhere (the API, another instance) shows once the counts are recounted;
    # until then the kept counts answer, without a scan.
    first, second = sorted(all_records(stores), key=lambda r: r["Number"])[:2]
    before = truth()
    update_record(
        stores,
        context.config,
        first,
        {"status": "closed"},
        Actor(name="API", source="api"),
        datetime.now(UTC),
    )
    assert truth() != before
    assert counts.status_counts(stores, everything)[0] == before
    # A change made here is counted at once, in the kept index (no new scan of every record:
    # the change made elsewhere waits for the next one), and its record comes first.
    agent = Principal("Агент", frozenset({AGENT}), "entra")
    route = {"type": "case", "id": str(second["DisplayId"])}
    status, page = _post("console_record_status", route, agent, {"status": "pending"})
    assert status == 303, page[:500]
    expected = Counter(dict(before))
    expected[str(second["Status"])] -= 1
    expected["pending"] += 1
    found, age = counts.status_counts(stores, everything)
    assert dict(found) == {k: n for k, n in expected.items() if n} and age > 0
    _, rows, _ = counts.scope_index(stores, counts.scope_of({"mailbox": "sample"}))
    assert (rows[0].key, rows[0].status) == (second["RowKey"], "pending")
    # The next scan brings both.
    counts.forget(stores)
    found, age = counts.status_counts(stores, everything)
    assert (found, age) == (truth(), 0.0)
    assert dict(found)["closed"] >= 1 and dict(found)["pending"] >= 1


def _list(who: Principal, query: dict[str, str]) -> tuple[int, str]:
    """The records list as the Functions host hands a GET over behind App Service
    Authentication."""
    registered = next(f for f in app_functions() if f.name == "console_records")
    request = func.HttpRequest(
        method="GET",
        url=f"https://{SITE}/api/console/records",
        headers={"Host": SITE, "X-MS-CLIENT-PRINCIPAL": _principal(who.name, sorted(who.roles))},
        params=query,
        body=b"",
    )
    response = registered.invoke(request)
    return int(response.status_code), response.get_body().decode()


@pytest.mark.azurite
@pytest.mark.usefixtures("easy_auth")
def test_the_records_list_is_newest_activity_first_across_pages(context: AppContext) -> None:
    poll_all(context, datetime(2026, 11, 24, 12, 0, tzinfo=UTC))
    local_host(context.stores.queues).drain()
    stores = context.stores
    records = sorted(all_records(stores), key=lambda r: r["Number"])
    assert len(records) >= 4
    # Activity in an order unlike the keys' or the numbers': the middle ones last.
    order = [*records[1:-1][::-1], records[0], records[-1]]
    for minutes, record in enumerate(order):
        update_record(
            stores,
            context.config,
            record,
            {"status": "open"},
            Actor(name="Оператор", source="api"),
            datetime(2026, 11, 25, 9, minutes, tzinfo=UTC),
        )
    newest_first = [str(r["DisplayId"]) for r in reversed(order)]
    reader = Principal("Рита Reader", frozenset({READ}), "entra")
    shown: list[str] = []
    for number in range(1, len(records) + 2):
        status, page = _list(reader, {"limit": "2", "page": str(number)})
        assert status == 200, page[:500]
        shown += re.findall(r'<td><a href="[^"]+">([^<]+)</a></td>', page)
        if 'rel="next"' not in page:
            break
    assert shown == newest_first
    # Filters keep the order; a page past the end is empty; a bad page or status is refused.
    status, page = _list(reader, {"status": "open", "limit": "50"})
    assert re.findall(r'<td><a href="[^"]+">([^<]+)</a></td>', page) == newest_first
    status, page = _list(reader, {"page": "99"})
    assert status == 200 and "No record matches" in page
    for query, code in (({"page": "0"}, 400), ({"page": "٣"}, 400), ({"status": "bogus"}, 422)):
        assert _list(reader, query)[0] == code, query
