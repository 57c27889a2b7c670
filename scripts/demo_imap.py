"""`make demo-imap`: try an IMAP mailbox in minutes, with no server of your own.

Starts a throwaway Dovecot on loopback (Debian: `apt-get install dovecot-imapd`) holding the
sample mail (samples/mail in INBOX, samples/mail/Sent in Sent), writes the mailbox's config to
.demo-imap/mailfiler.yaml, starts Azurite in memory and `mailfiler run` on that config (arguments
go to `mailfiler run`, e.g. `--port 7072`). Ctrl-C stops Mailfiler, Azurite and Dovecot; the
server's mail is deleted with it. The config is the one you would write for your own
server: change host, port, tls, username and password_setting.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.cli.azurite import Azurite  # noqa: E402 (after the path)
from tests.fakes.dovecot import Dovecot, available  # noqa: E402

USER = "support@mailfiler.example"
CONFIG = """\
# Written by `make demo-imap`: the sample's mailbox, read over IMAP from a throwaway Dovecot.
version: 1

record_types:
  - name: case
    prefix: CASE
    title: Support case

mailboxes:
  - name: support
    kind: imap
    host: 127.0.0.1
    port: {port}
    tls: none                 # loopback only; a real server: implicit (993) or starttls
    username: {user}
    password_setting: IMAP_SUPPORT_PASSWORD
    folders: [INBOX, Sent]    # Sent is read as mail we sent (direction out)
    addresses: [support@mailfiler.example, billing@mailfiler.example]
    record_type: case
    after_filing:
      mark_read: true

routes:
  - name: billing
    mailbox: support
    to: billing@mailfiler.example
    record_type: case
    fields:
      ProblemType: Billing
"""


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: Dovecot and its mail go too


def _storage() -> Azurite:
    """Azurite in memory, on its usual ports when they are free (so `mailfiler records list`
    in another shell finds it), else on free ones (printed)."""
    storage = Azurite(own_session=True)
    usual = (10000, 10001, 10002)
    if all(_free(port) for port in usual):
        storage.ports = usual
    storage.start()
    return storage


def _free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    if not available():
        print(
            "demo-imap: Dovecot is not installed (Debian/Ubuntu: apt-get install dovecot-imapd)",
            file=sys.stderr,
        )
        return 1
    password = secrets.token_urlsafe(12)
    server = Dovecot(users={USER: password})
    samples = REPO / "samples" / "mail"
    server.drop_messages(USER, [p.read_bytes() for p in sorted(samples.glob("*.eml"))])
    sent = [p.read_bytes() for p in sorted((samples / "Sent").glob("*.eml"))]
    server.drop_messages(USER, sent, folder="Sent")
    server.start()
    storage: Azurite | None = None
    try:
        folder = REPO / ".demo-imap"
        folder.mkdir(exist_ok=True)
        config = folder / "mailfiler.yaml"
        config.write_text(CONFIG.format(port=server.port, user=USER), encoding="utf-8")
        storage = _storage()
        print(
            f"demo-imap: Dovecot on 127.0.0.1:{server.port}, user {USER}, 8 sample mails",
            flush=True,
        )
        print(
            f"demo-imap: config {config.relative_to(REPO)} (IMAP_SUPPORT_PASSWORD is set)",
            flush=True,
        )
        print(
            f"demo-imap: Azurite in memory on 127.0.0.1:{storage.ports[0]}-{storage.ports[2]}",
            flush=True,
        )
        if storage.ports[0] != 10000:
            print(f"  export AzureWebJobsStorage='{storage.connection_string}'")
        env = {
            **os.environ,
            "IMAP_SUPPORT_PASSWORD": password,
            "MAILFILER_CONFIG": str(config),
            "AzureWebJobsStorage": storage.connection_string,
        }
        # A session of its own: Ctrl-C reaches this script only, which stops Mailfiler first,
        # then Azurite and Dovecot (storage gone under a running host makes it retry for long).
        run = subprocess.Popen(  # noqa: S603 (our own command)
            [sys.executable, "-m", "shared.cli", "run", "--config", str(config), *sys.argv[1:]],
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        try:
            return run.wait()
        except KeyboardInterrupt:
            run.terminate()
            try:
                return run.wait(60)
            except subprocess.TimeoutExpired:
                run.kill()
                return 1
    finally:
        if storage is not None:
            storage.stop()
        server.close()


if __name__ == "__main__":
    sys.exit(main())
