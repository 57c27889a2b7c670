"""The IMAP source over TLS against a real Dovecot (see tests/fakes/dovecot.py) and Azurite:
IMAPS, STARTTLS, and the certificate checks that are on unless configured otherwise."""

from __future__ import annotations

import imaplib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.cli.azurite import Azurite
from shared.services.context import AppContext, set_context
from shared.services.mailboxes import mailbox_status
from shared.settings import load_config
from shared.store.stores import INBOUND, INGEST, Stores
from tests.fakes.dovecot import Dovecot, require_dovecot
from tests.fakes.tls import Authority, shared_tls

from ..helpers import records, timeline_entries
from .test_imap import PASSWORD, USER, World, mail

pytestmark = pytest.mark.azurite


class TlsWorld(World):
    """test_imap's World, configured with `tls`, `ca_bundle` and a host of the test's choice."""

    def __init__(
        self,
        dovecot: Dovecot,
        stores: Stores,
        azurite: Azurite,
        tmp: Path,
        *,
        tls: str,
        ca_bundle: str | None,
        server: str = "127.0.0.1",
    ) -> None:
        self.tls, self.ca_bundle, self.server = tls, ca_bundle, server
        super().__init__(dovecot, stores, azurite, tmp)
        if tls == "implicit":
            assert dovecot.tls_port is not None
            self.port = dovecot.tls_port
            self.configure()

    def configure(
        self,
        extra: str = "",
        folders: str = "[INBOX]",
        types: str = "[{name: case, prefix: CASE}]",
    ) -> None:
        bundle = f"    ca_bundle: {self.ca_bundle}\n" if self.ca_bundle else ""
        self.file.write_text(
            f"record_types: {types}\n"
            "mailboxes:\n"
            "  - name: imap\n"
            "    kind: imap\n"
            f"    host: {self.server}\n"
            f"    port: {self.port}\n"
            f"    tls: {self.tls}\n"
            f"{bundle}"
            f"    username: {USER}\n"
            "    password_setting: IMAP_TEST_PASSWORD\n"
            f"    folders: {folders}\n"
            "    record_type: case\n"
            f"{extra}"
        )
        self.ctx = AppContext(self.settings, load_config(self.file), self.file.parent, self.stores)
        set_context(self.ctx)

    def logins(self) -> list[str]:
        """Dovecot's log lines of successful logins of USER."""
        log = (self.dovecot.dir / "dovecot.log").read_text()
        return [line for line in log.splitlines() if f"Login: user=<{USER}>" in line]

    def mentions_user(self) -> bool:
        """Whether the server ever saw USER (a LOGIN, failed or not)."""
        return f"user=<{USER}>" in (self.dovecot.dir / "dovecot.log").read_text()

    def assert_nothing_queued(self) -> None:
        assert self.stores.queues.depth(INBOUND) == 0
        assert list(self.stores.table(INGEST).all()) == []
        assert records(self.stores) == []


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """A CA of this module's own: tls.py's shared one has certificates for 127.0.0.1 and
    localhost only, and these tests need some for 127.0.0.2 and another host."""
    return Authority(tmp_path_factory.mktemp("imap-tls-ca"), "Mailfiler IMAP TLS test CA")


@pytest.fixture
def servers() -> Iterator[Callable[..., Dovecot]]:
    """Start a Dovecot with the given TLS arguments and USER; all are closed after the test."""
    require_dovecot()
    started: list[Dovecot] = []

    def start(
        tls: tuple[str, str], *, plaintext_auth: bool = True, address: str = "127.0.0.1"
    ) -> Dovecot:
        server = Dovecot(
            tls=tls, plaintext_auth=plaintext_auth, address=address, users={USER: PASSWORD}
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.close()


@pytest.fixture
def worlds(
    stores: Stores, azurite: Azurite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., TlsWorld]]:
    monkeypatch.setenv("IMAP_TEST_PASSWORD", PASSWORD)
    # "System CAs only" means the system's: no test CA slipped in through the environment.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    def make(
        dovecot: Dovecot, *, tls: str, ca_bundle: str | None, server: str = "127.0.0.1"
    ) -> TlsWorld:
        return TlsWorld(
            dovecot, stores, azurite, tmp_path, tls=tls, ca_bundle=ca_bundle, server=server
        )

    yield make
    set_context(None)


def test_implicit_tls_with_the_test_ca_files_mail(
    servers: Callable[..., Dovecot], worlds: Callable[..., TlsWorld]
) -> None:
    files = shared_tls()
    dovecot = servers(tls=(files.cert_file, files.key_file))
    world = worlds(dovecot, tls="implicit", ca_bundle=files.ca_file)
    assert world.port == dovecot.tls_port != dovecot.port
    dovecot.drop_messages(USER, [mail(1), mail(2)])
    assert world.poll() == "queued 2"
    world.host.drain()
    assert len(records(world.stores)) == 2 and len(timeline_entries(world.stores)) == 2
    assert mailbox_status(world.ctx)["imap"]["status"] == "ok"
    logins = world.logins()
    assert logins and all(", TLS, " in line for line in logins), logins


def test_starttls_files_mail_and_the_password_never_crosses_in_clear(
    servers: Callable[..., Dovecot], worlds: Callable[..., TlsWorld], authority: Authority
) -> None:
    # On 127.0.0.2 (the client comes from 127.0.0.1) Dovecot does not count the connection
    # as secure by itself: with plaintext auth disabled, only STARTTLS opens LOGIN.
    address = "127.0.0.2"
    dovecot = servers(tls=authority.issue(address), plaintext_auth=False, address=address)
    probe = imaplib.IMAP4(address, dovecot.port, timeout=10)
    try:
        assert "STARTTLS" in probe.capabilities and "LOGINDISABLED" in probe.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            probe.login(USER, "not-the-password")  # the server refuses LOGIN in clear
    finally:
        probe.shutdown()
    world = worlds(dovecot, tls="starttls", ca_bundle=authority.ca_file, server=address)
    assert world.port == dovecot.port
    dovecot.drop_messages(USER, [mail(1), mail(2)])
    assert world.poll() == "queued 2"
    world.host.drain()
    assert len(records(world.stores)) == 2 and len(timeline_entries(world.stores)) == 2
    logins = world.logins()
    assert len(logins) == 1 and ", TLS, " in logins[0] and "lip=127.0.0.2" in logins[0], logins


@pytest.mark.parametrize("mode", ["implicit", "starttls"])
def test_certificates_are_checked_against_the_system_cas_by_default(
    servers: Callable[..., Dovecot], worlds: Callable[..., TlsWorld], mode: str
) -> None:
    files = shared_tls()
    dovecot = servers(tls=(files.cert_file, files.key_file))
    world = worlds(dovecot, tls=mode, ca_bundle=None)  # no ca_bundle: the system's CAs
    dovecot.drop_messages(USER, [mail(1)])
    assert world.poll() == "failed"
    status = mailbox_status(world.ctx)["imap"]
    error = str(status["last_error"])
    assert status["status"] == "failing"
    assert "CERTIFICATE_VERIFY_FAILED" in error and "certificate verify failed" in error, error
    assert "IMAP server 127.0.0.1" in error
    assert PASSWORD not in error
    world.assert_nothing_queued()
    assert not world.mentions_user()  # no LOGIN was sent: the handshake failed first


@pytest.mark.parametrize(
    ("mode", "server", "kind"),
    [("implicit", "127.0.0.1", "IP address"), ("starttls", "localhost", "Hostname")],
)
def test_a_certificate_for_another_host_is_refused_even_by_its_own_ca(
    servers: Callable[..., Dovecot],
    worlds: Callable[..., TlsWorld],
    authority: Authority,
    mode: str,
    server: str,
    kind: str,
) -> None:
    dovecot = servers(tls=authority.issue("other.example.test"))
    world = worlds(dovecot, tls=mode, ca_bundle=authority.ca_file, server=server)
    dovecot.drop_messages(USER, [mail(1)])
    assert world.poll() == "failed"
    error = str(mailbox_status(world.ctx)["imap"]["last_error"])
    assert "CERTIFICATE_VERIFY_FAILED" in error, error
    assert re.search(rf"{kind} mismatch, certificate is not valid for '{server}'", error), error
    world.assert_nothing_queued()
    assert not world.mentions_user()
