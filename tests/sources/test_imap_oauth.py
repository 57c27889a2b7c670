"""IMAP XOAUTH2 for a person, not an app: Microsoft's device-code sign-in (fake Entra ID over
HTTPS) with the token cache stored encrypted, against a real Dovecot and Azurite."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from shared.cli.azurite import Azurite
from shared.cli.main import main
from shared.core.config import ImapMailbox
from shared.services.context import set_context
from shared.services.mailboxes import mailbox_status
from shared.sources.imap.oauth import forget_token, new_key, sign_in
from shared.store import imap_tokens
from shared.store.stores import IMAP_STATE, Stores
from tests.fakes.dovecot import Dovecot, require_dovecot
from tests.fakes.graph import FakeGraph

from ..helpers import records
from .test_imap import PASSWORD, USER, World, mail

pytestmark = pytest.mark.azurite


class Delegated:
    def __init__(self, entra: FakeGraph, world: World, key: str) -> None:
        self.entra, self.world, self.key = entra, world, key
        world.configure(
            extra=(
                "    auth: xoauth2\n"
                "    oauth: {tenant_id: contoso, client_id: imap-public, auth: device_code,"
                f" login_endpoint: '{entra.login_url}',"
                f" scope: '{entra.base_url}/IMAP.AccessAsUser.All'}}\n"
            )
        )

    @property
    def mailbox(self) -> ImapMailbox:
        mailbox = self.world.ctx.config.mailbox("imap")
        assert isinstance(mailbox, ImapMailbox)
        return mailbox

    def row(self) -> dict[str, object]:
        row = imap_tokens.load(self.world.stores.table(IMAP_STATE), "imap")
        assert row is not None
        return row

    def sign_in(self, user: str = USER) -> str:
        shown: list[str] = []

        def approve(text: str) -> None:  # the person opens the page and enters the code
            shown.append(text)
            code = re.search(r"enter the code (\w+)", text)
            assert code, text
            self.entra.tokens.approve_device(code.group(1), user)

        account = sign_in(self.mailbox, self.world.stores, datetime.now(UTC), approve)
        assert shown and "https://microsoft.com/devicelogin" in shown[0]
        return account


@pytest.fixture
def delegated(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Delegated]:
    require_dovecot()
    key = new_key()
    monkeypatch.setenv("MAILFILER_TOKEN_KEY", key)
    with FakeGraph() as entra:
        for name, value in entra.ca_env().items():
            monkeypatch.setenv(name, value)
        entra.tokens.add_public_client("contoso", "imap-public")
        introspection = entra.msi_endpoint.replace("/msi/token", "/introspect?token=")
        with Dovecot(introspection_url=introspection, users={USER: PASSWORD}) as server:
            yield Delegated(entra, World(server, stores, azurite, tmp_path), key)
    set_context(None)


def test_a_device_code_sign_in_is_stored_encrypted_and_polls_refresh_silently(
    delegated: Delegated,
) -> None:
    world = delegated.world
    world.append([mail(1)])
    (warning,) = mailbox_status(world.ctx)["imap"]["warnings"]
    assert "not signed in: run mailfiler auth imap --mailbox imap" in warning
    assert world.poll() == "failed"
    assert "not signed in" in str(mailbox_status(world.ctx)["imap"]["last_error"])

    # Tokens that live under msal's 5-minute margin: every poll redeems the refresh token.
    delegated.entra.tokens.lifetime = 200
    assert delegated.sign_in() == USER
    row = delegated.row()
    cache = str(row["Cache"])
    grants = delegated.entra.tokens.refresh_tokens
    assert grants and not any(token in cache for token in grants)  # never in plain text
    assert "refresh_token" not in cache.lower() and USER not in cache
    assert "RefreshToken" in Fernet(delegated.key.encode()).decrypt(cache.encode()).decode()
    assert mailbox_status(world.ctx)["imap"]["warnings"] == []

    assert world.poll() == "queued 1"
    world.host.drain()
    assert len(records(world.stores)) == 1
    # msal redeemed the refresh token (rotated by Entra), and the new cache was kept.
    after = delegated.row()
    assert after["Cache"] != cache and after["RefreshedAt"] > row["RefreshedAt"]  # type: ignore[operator]
    world.append([mail(2)])
    assert world.poll() == "queued 1"

    # An admin revokes the sessions: the poll fails and says what to do.
    delegated.entra.tokens.revoke_refresh_tokens(USER)
    world.append([mail(3)])
    assert world.poll() == "failed"
    error = str(mailbox_status(world.ctx)["imap"]["last_error"])
    assert "invalid_grant" in error and "mailfiler auth imap --mailbox imap" in error

    # Signing in again mends it; nothing was lost meanwhile.
    delegated.sign_in()
    assert world.poll() == "queued 1"
    world.host.drain()
    assert len(records(world.stores)) == 3


def test_a_refresh_token_unused_for_long_warns_before_it_lapses(delegated: Delegated) -> None:
    delegated.sign_in()
    now = datetime.now(UTC)
    table = delegated.world.stores.table(IMAP_STATE)
    for idle_days, expect in ((30, None), (65, "lapses on"), (95, "has lapsed")):
        imap_tokens.save(table, "imap", RefreshedAt=now - timedelta(days=idle_days))
        warnings = mailbox_status(delegated.world.ctx, now)["imap"]["warnings"]
        if expect is None:
            assert warnings == []
        else:
            assert len(warnings) == 1 and expect in warnings[0], warnings


def test_a_cache_under_another_key_asks_for_a_new_sign_in(
    delegated: Delegated, monkeypatch: pytest.MonkeyPatch
) -> None:
    delegated.sign_in()
    delegated.world.append([mail(1)])
    monkeypatch.setenv("MAILFILER_TOKEN_KEY", new_key())
    forget_token(delegated.mailbox)
    assert delegated.world.poll() == "failed"
    assert "does not decrypt" in str(mailbox_status(delegated.world.ctx)["imap"]["last_error"])
    # Rotation keeps the old key after the new one: the cache still opens.
    monkeypatch.setenv("MAILFILER_TOKEN_KEY", f"{new_key()},{delegated.key}")
    assert delegated.world.poll() == "queued 1"


def test_the_cli_makes_keys_and_names_unknown_mailboxes(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    assert main(["auth", "new-key"]) == 0
    Fernet(capsys.readouterr().out.strip().encode())  # a valid key
    config = tmp_path / "mailfiler.yaml"
    config.write_text(
        "record_types: [{name: case, prefix: CASE}]\n"
        "mailboxes: [{name: files, kind: local, path: inbox, record_type: case}]\n"
    )
    assert main(["auth", "imap", "--mailbox", "files", "--config", str(config)]) == 1
    assert "no IMAP mailbox 'files'" in capsys.readouterr().err
