"""A real Dovecot IMAP server for tests: rootless, on a free loopback port, in a temp dir.

Config from ../shared/FACTS.md (IMAP). Debian's `dovecot-imapd` must be installed (`.ci/run`
installs it). Run as root, the server drops to `nobody` through setpriv. With `tls=` it also
speaks STARTTLS on `port` and IMAPS on `tls_port` (certificates: tests/fakes/tls.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import pytest

from shared.cli.azurite import free_port
from tests.fakes.harness import Serving

CONFIG = """\
protocols = imap
listen = {address}
ssl = {ssl}
disable_plaintext_auth = {disable_plaintext_auth}
{ssl_settings}auth_mechanisms = plain login{oauth_mechanisms}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
default_internal_user = {user}
default_login_user = {user}
default_internal_group = {group}
mail_location = maildir:{dir}/mail/%u
mail_plugins =
{oauth_passdb}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={dir}/home/%u
}}
protocol imap {{
  imap_capability = {capability}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {address}
    port = {port}
  }}
  inet_listener imaps {{
{imaps}
  }}
}}
service anvil {{
  chroot =
}}
"""


def available() -> bool:
    return shutil.which("dovecot") is not None


def require_dovecot() -> None:
    """Fail the test when Dovecot is missing: CI installs it (a skip would hide a broken set-up)."""
    if not available():
        pytest.fail("dovecot is not installed (apt-get install dovecot-imapd; .ci/run does)")


class Dovecot(Serving):
    def __init__(
        self,
        introspection_url: str | None = None,
        capability: str = "+MOVE",
        *,
        tls: tuple[str, str] | None = None,
        plaintext_auth: bool = True,
        address: str = "127.0.0.1",
        master_users: dict[str, str] | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        """`introspection_url`: also accept XOAUTH2, checking each bearer token there
        (Dovecot's oauth2 passdb, GET <url><token>, the user in its `username`).
        `capability`: Dovecot's `imap_capability` (a whole list replaces the defaults, which
        is how a test plays a server without CONDSTORE).
        `tls`: (certificate PEM, key PEM) files (copied into the server's dir, so the dropped
        user can read them): STARTTLS on `port` and implicit TLS (IMAPS) on `tls_port`.
        `plaintext_auth=False`: `disable_plaintext_auth = yes`, so LOGIN and AUTHENTICATE
        PLAIN are refused (LOGINDISABLED) until STARTTLS. Dovecot counts a connection whose
        two ends share an IP as secure and lets it log in anyway, and a client of 127.0.0.1
        comes from 127.0.0.1: give `address="127.0.0.2"` (Linux answers all of 127/8 and
        connects from 127.0.0.1) for the refusal to happen.
        `address`: the loopback address both listeners bind.
        `master_users`: users (name -> password) who may log in as anyone: SASL PLAIN with
        another authorization identity, or `target*master` (how a delegate opens a shared
        mailbox over IMAP).
        `users`: mailboxes (name -> password) to add at once, as add_user does."""
        self.introspection_url = introspection_url
        self.capability = capability
        self.tls = tls
        self.plaintext_auth = plaintext_auth
        self.address = address
        self.master_users = dict(master_users or {})
        self.dir = Path(tempfile.mkdtemp(prefix="mailfiler-dovecot-"))
        self.port = free_port()
        self.tls_port: int | None = free_port() if tls else None
        self.users: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        root = os.geteuid() == 0
        self._user, self._group = ("nobody", "nogroup") if root else _me()
        self._drop = (
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if root else []
        )
        for user, password in (users or {}).items():
            self.add_user(user, password)

    def add_user(self, user: str, password: str) -> None:
        self.users[user] = password
        lines = "".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items())
        (self.dir / "passwd").write_text(lines)
        self._own()

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """The user's Maildir folder (Maildir++: `.Name` below the root; INBOX is the root)."""
        root = self.dir / "mail" / user
        path = root if folder == "INBOX" else root / ("." + folder.replace("/", "."))
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        return path

    def drop_messages(self, user: str, messages: list[bytes], folder: str = "INBOX") -> None:
        """Write messages straight into the Maildir (fast, for big mailboxes); Dovecot assigns
        their UIDs when it next looks."""
        new = self.maildir(user, folder) / "new"
        stamp = int(time.time())
        for i, raw in enumerate(messages):
            (new / f"{stamp}.M{i}P{os.getpid()}.mailfiler").write_bytes(raw)
        self._own()

    def start(self) -> Self:
        for sub in ("run", "state", "mail", "home"):
            (self.dir / sub).mkdir(exist_ok=True)
        config = self.dir / "dovecot.conf"
        oauth_passdb = ""
        if self.introspection_url:
            (self.dir / "oauth2.conf.ext").write_text(
                "introspection_mode = get\n"
                f"introspection_url = {self.introspection_url}\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n"
            )
            oauth_passdb = (
                "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {self.dir}/oauth2.conf.ext\n}}\n"
            )
        if self.master_users:
            lines = "".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.master_users.items())
            (self.dir / "masters").write_text(lines)
            oauth_passdb = (
                "auth_master_user_separator = *\n"
                "passdb {\n  driver = passwd-file\n  master = yes\n  pass = yes\n"
                f"  args = scheme=PLAIN username_format=%u {self.dir}/masters\n}}\n"
            ) + oauth_passdb
        config.write_text(
            CONFIG.format(
                dir=self.dir,
                address=self.address,
                port=self.port,
                user=self._user,
                group=self._group,
                oauth_mechanisms=" xoauth2 oauthbearer" if self.introspection_url else "",
                oauth_passdb=oauth_passdb,
                capability=self.capability,
                **self._tls_settings(),
            )
        )
        if not (self.dir / "passwd").exists():
            (self.dir / "passwd").write_text("")
        self._own()
        self._process = subprocess.Popen(
            [*self._drop, "dovecot", "-F", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: kill() takes the children too
        )
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"dovecot exited: {err}")
            try:
                for port in (self.port, self.tls_port):
                    if port is not None:
                        with socket.create_connection((self.address, port), timeout=0.2):
                            pass
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("dovecot did not start listening")

    def kill(self) -> None:
        """Stop at once (SIGKILL): the server dies mid-conversation."""
        if self._process:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)
        self._process = None

    def stop(self) -> None:
        if self._process:
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
                self._process.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _tls_settings(self) -> dict[str, str]:
        """The config lines for `tls` and `plaintext_auth` (without `tls`: as before)."""
        settings = {
            "ssl": "no",
            "disable_plaintext_auth": "no" if self.plaintext_auth else "yes",
            "ssl_settings": "",
            "imaps": "    port = 0",
        }
        if self.tls is None:
            return settings
        folder = self.dir / "tls"
        folder.mkdir(exist_ok=True)
        cert, key = folder / "cert.pem", folder / "key.pem"
        shutil.copyfile(self.tls[0], cert)
        shutil.copyfile(self.tls[1], key)
        key.chmod(0o600)
        return {
            **settings,
            "ssl": "yes",
            # No ssl_dh: 2.3 then offers no DHE suites and says nothing; ECDHE is enough.
            "ssl_settings": f"ssl_cert = <{cert}\nssl_key = <{key}\nssl_min_protocol = TLSv1.2\n",
            "imaps": f"    address = {self.address}\n    port = {self.tls_port}",
        }

    def _own(self) -> None:
        """Hand the tree to the user Dovecot runs as. A running Dovecot creates and removes
        files meanwhile (locks, temporary index files): one that vanished needs no owner."""
        if not self._drop:
            return
        import grp
        import pwd

        uid, gid = pwd.getpwnam(self._user).pw_uid, grp.getgrnam(self._group).gr_gid
        for root, dirs, files in os.walk(self.dir):
            for name in (root, *(os.path.join(root, n) for n in (*dirs, *files))):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(name, uid, gid, follow_symlinks=False)


def _me() -> tuple[str, str]:
    import grp
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
