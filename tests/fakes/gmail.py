"""A fake Gmail for the IMAP source's tests: Gmail's IMAP extensions on top of a real Dovecot, and
Google's OAuth 2.0 token endpoint.

Gmail itself cannot run here, so :class:`GmailImapProxy` sits between the client and a running
:class:`tests.fakes.dovecot.Dovecot` (plain TCP on 127.0.0.1) and makes Dovecot look like Gmail's
IMAP extensions (https://developers.google.com/gmail/imap/imap-extensions):

* ``X-GM-EXT-1`` joins every capability list the server sends (``* CAPABILITY`` and the
  ``[CAPABILITY ...]`` response code of the greeting and of the tagged OK after LOGIN/AUTHENTICATE);
* ``FETCH``/``UID FETCH`` accept ``X-GM-MSGID`` and ``X-GM-THRID`` (any case). The proxy swaps them
  for ``BODY.PEEK[HEADER.FIELDS (MESSAGE-ID REFERENCES IN-REPLY-TO ... X-MAILFILER-GMFAKE-..)]``
  (the last, non-existent header name is the marker telling which attributes were asked), reads
  the ids off each ``* n FETCH`` response, removes that item again and puts
  ``X-GM-MSGID n X-GM-THRID m`` right after the response's opening parenthesis. No side
  connection and no credentials are needed, and XOAUTH2 sessions work alike.

The ids: ``X-GM-MSGID`` is a 63-bit hash of the Message-ID (:func:`gm_id`), so the same message in
two folders has the same id, as on Gmail; ``X-GM-THRID`` is the id of the first Message-ID in
References (else In-Reply-To, else the message's own). :meth:`GmailImapProxy.label` overrides
both for one (folder, UID). Both directions are parsed literal-aware (``{n}`` / ``{n+}`` /
``~{n}``); literal bytes are never touched.

:class:`FakeGoogleOAuth` answers ``POST /token`` (refresh_token grant) as
https://oauth2.googleapis.com/token does, ``POST /revoke`` as https://oauth2.googleapis.com/revoke,
and ``GET /introspect?token=<token>`` for Dovecot's oauth2 passdb::

    with FakeGoogleOAuth() as google:
        dovecot = Dovecot(introspection_url=google.introspection_url)
        dovecot.add_user("ann@example.test", "pw")  # before start (it chowns the tree)
        with dovecot, GmailImapProxy(dovecot.port) as gmail:
            IMAPClient("127.0.0.1", port=gmail.port, ssl=False)
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.harness import HttpServer, OneServer, Reply, TcpServer, close_socket, json_reply

GMAIL_SCOPE = "https://mail.google.com/"
GM_CAPABILITY = b"X-GM-EXT-1"
ACCESS_TOKEN_LIFETIME = 3599  # what Google's token endpoint answers in expires_in

# The headers the proxy fetches in place of X-GM-*; the last name marks (and flags) its item.
ID_HEADERS = b"MESSAGE-ID REFERENCES IN-REPLY-TO DATE FROM SUBJECT"
MARKER = b"X-MAILFILER-GMFAKE-"
_CHUNK = 1 << 16

_LITERAL_END = re.compile(rb"~?\{(\d+)(\+?)\}\r\n\Z")
_COMMAND = re.compile(rb"(\S+) ([A-Za-z][A-Za-z0-9-]*)(?: ([A-Za-z][A-Za-z0-9-]*))?")
_FETCH_COMMAND = re.compile(rb"(\S+) ((?:UID )?FETCH) (\S+) (.+)\r\n\Z", re.I | re.S)
_SELECT_COMMAND = re.compile(rb"(\S+) (?:SELECT|EXAMINE) (.*)\Z", re.I | re.S)
_CAPABILITY_LINE = re.compile(rb"\* CAPABILITY ([^\r\n]*)", re.I)
_CAPABILITY_CODE = re.compile(rb"\S+ (?:OK|PREAUTH|NO|BAD|BYE) \[CAPABILITY ([^\]]*)\]", re.I)
_FETCH_RESPONSE = re.compile(rb"\* (\d+) FETCH \(", re.I)
_TAGGED = re.compile(rb"([^\s*+]\S*) (OK|NO|BAD)\b", re.I)
_ANGLE_ID = re.compile(r"<[^<>\s]+>")


def gm_id(message_id: str) -> int:
    """The X-GM-MSGID the proxy derives from a Message-ID (``<a@b>``, brackets optional): a
    stable, positive 63-bit integer."""
    text = message_id.strip()
    if not text.startswith("<"):
        text = f"<{text}>"
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
    return value or 1


def derive_ids(header: bytes) -> tuple[int, int]:
    """(X-GM-MSGID, X-GM-THRID) from a message's header block."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(header)

    def ids(name: str) -> list[str]:
        return _ANGLE_ID.findall(" ".join(str(v) for v in parsed.get_all(name) or []))

    own = ids("Message-ID")
    if own:
        msgid = gm_id(own[0])
    else:  # no Message-ID: hash what there is (Date, From, Subject), the same in every folder
        digest = hashlib.sha256(b"no-message-id\0" + header.strip()).digest()[:8]
        msgid = (int.from_bytes(digest, "big") >> 1) or 1
    root = ids("References") or ids("In-Reply-To")
    return msgid, gm_id(root[0]) if root else msgid


# --- IMAP syntax helpers -------------------------------------------------------------------------


def _split_top(text: bytes) -> list[bytes]:
    """Split on spaces outside (), [] and quoted strings."""
    parts: list[bytes] = []
    depth, start, i, quoted = 0, 0, 0, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == 0x5C:  # backslash
                i += 1
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c in b"([":
            depth += 1
        elif c in b")]":
            depth -= 1
        elif c == 0x20 and depth == 0:
            if i > start:
                parts.append(text[start:i])
            start = i + 1
        i += 1
    if len(text) > start:
        parts.append(text[start:])
    return parts


def _skip_value(data: bytes, pos: int) -> int:
    """End of the IMAP value (atom, number, NIL, quoted, literal, list) starting at pos."""
    c = data[pos]
    if c == 0x28:  # (
        pos += 1
        while True:
            while data[pos] == 0x20:
                pos += 1
            if data[pos] == 0x29:
                return pos + 1
            pos = _skip_value(data, pos)
    if c == 0x22:  # "
        pos += 1
        while data[pos] != 0x22:
            pos += 2 if data[pos] == 0x5C else 1
        return pos + 1
    if c == 0x7E and data[pos + 1 : pos + 2] == b"{":  # ~{n} literal8
        pos += 1
        c = 0x7B
    if c == 0x7B:  # {n}\r\n<n bytes>
        end = data.index(b"}", pos)
        size = int(data[pos + 1 : end].rstrip(b"+"))
        if data[end + 1 : end + 3] != b"\r\n":
            raise ValueError("literal without CRLF")
        return end + 3 + size
    while pos < len(data) and data[pos] not in b" ()\r\n":
        pos += 1
    return pos


def _decode_value(value: bytes) -> bytes:
    if value.startswith((b"{", b"~{")):
        return value[value.index(b"}\r\n") + 3 :]
    if value.startswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", value[1:-1])
    return b"" if value.upper() == b"NIL" else value


@dataclass
class _Item:
    name: bytes
    start: int
    value_start: int
    end: int


def _fetch_items(data: bytes, pos: int) -> tuple[list[_Item], int]:
    """The `name value` pairs of a FETCH attribute list whose '(' ends at pos; and the index of its
    closing ')'."""
    items: list[_Item] = []
    while True:
        while data[pos] == 0x20:
            pos += 1
        if data[pos] == 0x29:
            return items, pos
        start, depth = pos, 0
        while True:
            c = data[pos]
            if c == 0x5B:
                depth += 1
            elif c == 0x5D:
                depth -= 1
            elif depth == 0 and c in b" )":
                break
            pos += 1
        name = data[start:pos]
        if data[pos] != 0x20:
            raise ValueError(f"FETCH item {name!r} without a value")
        value_start = pos + 1
        pos = _skip_value(data, value_start)
        items.append(_Item(name, start, value_start, pos))


def _add_capability(line: bytes) -> bytes:
    for pattern in (_CAPABILITY_LINE, _CAPABILITY_CODE):
        match = pattern.match(line)
        if match and GM_CAPABILITY not in match.group(1).upper().split():
            line = line[: match.end(1)] + b" " + GM_CAPABILITY + line[match.end(1) :]
    return line


def _mailbox_name(args: bytes, literal: bytes | None) -> str | None:
    """The mailbox argument of SELECT/EXAMINE: an atom, a quoted string or a literal."""
    if literal is not None and _LITERAL_END.match(args):
        raw = literal
    elif args.startswith(b'"'):
        end = _skip_value(args, 0)
        raw = _decode_value(args[:end])
    else:
        raw = args.split(b" ", 1)[0].strip()
    name = raw.decode("utf-8", "replace")
    return "INBOX" if name.upper() == "INBOX" else name


# --- the proxy ------------------------------------------------------------------------------------


@dataclass
class _Session:
    """One client connection's state, shared by its two pump threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    selected: str | None = None
    pending_select: dict[bytes, str | None] = field(default_factory=dict)
    gm_tags: set[bytes] = field(default_factory=set)


def _copy(reader: io.BufferedReader, sock: socket.socket, size: int, keep: bool) -> bytes:
    """Forward `size` bytes as they arrive; return them if `keep`."""
    kept = bytearray()
    while size > 0:
        chunk = reader.read(min(size, _CHUNK))
        if not chunk:
            raise ConnectionError("peer closed inside a literal")
        sock.sendall(chunk)
        if keep:
            kept += chunk
        size -= len(chunk)
    return bytes(kept)


class GmailImapProxy(OneServer[TcpServer]):
    """A Gmail-flavoured IMAP endpoint on 127.0.0.1:`port` in front of the IMAP server at
    `upstream_host`:`upstream_port` (a Dovecot), plain TCP, a thread pair per connection.

    ``commands`` counts commands by name (``LOGIN``, ``SELECT``, ``UID FETCH``...);
    ``connections`` counts accepted connections; ``errors`` collects responses the proxy could not
    annotate (a bug in the fake; they were forwarded unchanged)."""

    def __init__(
        self, upstream_port: int, upstream_host: str = "127.0.0.1", spread_sources: bool = True
    ) -> None:
        """`spread_sources`: connect to a loopback upstream from 127.0.0.2, .3, ... in turn, so
        Dovecot's per-address auth penalty (anvil: 2, 4, 8.. up to 15 s after each failed login)
        does not pile up over a test's connections; its flat 2 s failure delay stays."""
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.spread_sources = spread_sources and upstream_host.startswith("127.")
        self.commands: Counter[str] = Counter()
        self.connections = 0
        self.errors: list[Exception] = []
        self._labels: dict[tuple[str, int], tuple[int, int]] = {}
        self._lock = threading.Lock()

    def _source_address(self) -> tuple[str, int] | None:
        if not self.spread_sources:
            return None
        with self._lock:
            return (f"127.0.{self.connections // 253 % 256}.{self.connections % 253 + 2}", 0)

    # --- test API -------------------------------------------------------------------------------

    def label(self, folder: str, uid: int, msgid: int, thrid: int) -> None:
        """Give message `uid` of `folder` these X-GM-MSGID / X-GM-THRID (over the derived ones)."""
        folder = "INBOX" if folder.upper() == "INBOX" else folder
        with self._lock:
            self._labels[(folder, uid)] = (msgid, thrid)

    def command_count(self, name: str) -> int:
        with self._lock:
            return self.commands[name.upper()]

    def make_server(self) -> TcpServer:
        return TcpServer(self._serve)  # its stop() closes the live connections too

    def _serve(self, client: socket.socket) -> None:
        """One client connection: a connection upstream and a pump thread each way."""
        server = self.server
        try:
            upstream = socket.create_connection(
                (self.upstream_host, self.upstream_port), 10, self._source_address()
            )
        except OSError:
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if server is not None:
            server.hold(client, upstream)
        with self._lock:
            self.connections += 1
        session = _Session()
        down = threading.Thread(
            target=self._pump_responses, args=(upstream, client, session), daemon=True
        )
        down.start()
        try:
            self._pump_commands(client, upstream, session)
        except (OSError, ValueError):
            pass
        finally:
            close_socket(upstream)
            down.join(timeout=5)
            close_socket(client)
            if server is not None:
                server.release(client, upstream)

    # --- client -> server ------------------------------------------------------------------------

    def _pump_commands(self, client: socket.socket, upstream: socket.socket, s: _Session) -> None:
        reader = client.makefile("rb")
        while True:
            line = reader.readline()
            if not line:
                return
            first, literal = line, None
            # Forward every line that announces a literal at once (a synchronizing literal waits
            # for the server's "+"), then the literal's bytes as they come; the last line of the
            # command is held until the command is understood.
            while match := _LITERAL_END.search(line):
                upstream.sendall(line)
                size = int(match.group(1))
                data = _copy(reader, upstream, size, keep=size <= 1024 and literal is None)
                if literal is None and size <= 1024:
                    literal = data
                line = reader.readline()
                if not line:
                    return
            try:
                line = self._on_command(first, line, literal, s)
            except Exception as exc:  # a bug in the fake: forward as is, let the test see it
                self.errors.append(exc)
            upstream.sendall(line)

    def _on_command(self, first: bytes, last: bytes, literal: bytes | None, s: _Session) -> bytes:
        """Note the command (`first` is its first line, `last` its unsent last one) and return
        `last`, rewritten for X-GM-* FETCH items."""
        match = _COMMAND.match(first)
        if match is None:  # SASL data, IDLE's DONE, an empty line
            return last
        tag, verb = match.group(1), match.group(2).upper()
        if verb == b"UID" and match.group(3):
            verb += b" " + match.group(3).upper()
        with self._lock:
            self.commands[verb.decode()] += 1
        if verb in (b"SELECT", b"EXAMINE"):
            args = _SELECT_COMMAND.match(first)
            name = _mailbox_name(args.group(2), literal) if args else None
            with s.lock:
                s.pending_select[tag] = name
        elif verb in (b"CLOSE", b"UNSELECT"):
            with s.lock:
                s.pending_select[tag] = None
        elif verb in (b"FETCH", b"UID FETCH") and first is last:
            rewritten = self._rewrite_fetch(last)
            if rewritten is not None:
                with s.lock:
                    s.gm_tags.add(tag)
                return rewritten
        return last

    @staticmethod
    def _rewrite_fetch(line: bytes) -> bytes | None:
        match = _FETCH_COMMAND.match(line)
        if match is None:
            return None
        tag, verb, sequence, rest = match.groups()
        parts = _split_top(rest)
        if not parts:
            return None
        spec, modifiers = parts[0], parts[1:]
        items = _split_top(spec[1:-1]) if spec.startswith(b"(") else [spec]
        wanted = {i.upper() for i in items} & {b"X-GM-MSGID", b"X-GM-THRID"}
        if not wanted:
            return None
        kept = [i for i in items if i.upper() not in (b"X-GM-MSGID", b"X-GM-THRID")]
        flags = b"M" if b"X-GM-MSGID" in wanted else b""
        flags += b"T" if b"X-GM-THRID" in wanted else b""
        if not verb.upper().startswith(b"UID") and b"UID" not in {i.upper() for i in kept}:
            kept.append(b"UID")  # to find label()s; taken out of the answer again
            flags += b"U"
        kept.append(b"BODY.PEEK[HEADER.FIELDS (" + ID_HEADERS + b" " + MARKER + flags + b")]")
        out = b" ".join([tag, verb, sequence, b"(" + b" ".join(kept) + b")", *modifiers])
        return out + b"\r\n"

    # --- server -> client ------------------------------------------------------------------------

    def _pump_responses(self, upstream: socket.socket, client: socket.socket, s: _Session) -> None:
        reader = upstream.makefile("rb")
        try:
            while True:
                line = reader.readline()
                if not line:
                    return
                with s.lock:
                    annotate = bool(s.gm_tags)
                if annotate and _FETCH_RESPONSE.match(line):
                    response = bytearray(line)
                    while match := _LITERAL_END.search(line):
                        size = int(match.group(1))
                        response += reader.read(size)
                        line = reader.readline()
                        response += line
                    client.sendall(self._annotate(bytes(response), s))
                    continue
                if not _LITERAL_END.search(line):
                    line = _add_capability(line)
                    self._on_tagged(line, s)
                client.sendall(line)
                while match := _LITERAL_END.search(line):
                    _copy(reader, client, int(match.group(1)), keep=False)
                    line = reader.readline()
                    client.sendall(line)
        except (OSError, ValueError):
            pass
        finally:
            close_socket(client)

    @staticmethod
    def _on_tagged(line: bytes, s: _Session) -> None:
        match = _TAGGED.match(line)
        if match is None:
            return
        tag, ok = match.group(1), match.group(2).upper() == b"OK"
        with s.lock:
            s.gm_tags.discard(tag)
            if tag in s.pending_select:
                name = s.pending_select.pop(tag)
                s.selected = name if ok else None

    def _annotate(self, data: bytes, s: _Session) -> bytes:
        try:
            opening = _FETCH_RESPONSE.match(data)
            assert opening is not None
            items, close = _fetch_items(data, opening.end())
            marker = next(
                (
                    i
                    for i in items
                    if i.name.upper().startswith(b"BODY[HEADER.FIELDS") and MARKER in i.name.upper()
                ),
                None,
            )
            if marker is None:  # not ours (e.g. an unsolicited FLAGS update)
                return data
            flags = marker.name.upper().split(MARKER, 1)[1].split(b")", 1)[0]
            uid = next(
                (int(data[i.value_start : i.end]) for i in items if i.name.upper() == b"UID"), None
            )
            msgid, thrid = derive_ids(_decode_value(data[marker.value_start : marker.end]))
            with s.lock:
                folder = s.selected
            with self._lock:
                msgid, thrid = self._labels.get((folder or "", uid or 0), (msgid, thrid))
            drop = {id(marker)}
            if b"U" in flags:
                drop |= {id(i) for i in items if i.name.upper() == b"UID"}
            attributes = [b"X-GM-MSGID %d" % msgid] if b"M" in flags else []
            attributes += [b"X-GM-THRID %d" % thrid] if b"T" in flags else []
            attributes += [data[i.start : i.end] for i in items if id(i) not in drop]
            return data[: opening.end()] + b" ".join(attributes) + data[close:]
        except Exception as exc:  # a bug in the fake: forward as is, let the test see it
            self.errors.append(exc)
            return data


# --- Google's OAuth 2.0 endpoint -----------------------------------------------------------------


@dataclass
class _RefreshToken:
    client_id: str
    user: str
    scope: str
    revoked: bool = False


@dataclass
class _AccessToken:
    client_id: str
    user: str
    scope: str
    expires_at: float
    refresh_token: str | None


def _google_error(status: int, error: str, description: str) -> Reply:
    return _google_json(status, {"error": error, "error_description": description})


def _google_json(status: int, payload: Any) -> Reply:
    headers = {
        "Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
        "Pragma": "no-cache",
    }
    return json_reply(status, payload, headers)


class FakeGoogleOAuth(OneServer[HttpServer]):
    """Google's token endpoint on http://127.0.0.1:PORT: ``token_uri`` (``POST /token``, the
    refresh_token grant), ``revoke_uri`` (``POST /revoke``) and ``introspection_url``
    (``GET /introspect?token=<token>``, for Dovecot's oauth2 passdb; not a Google endpoint).

    Shapes follow https://developers.google.com/identity/protocols/oauth2/web-server (refreshing
    an access token, revoking a token) and what oauth2.googleapis.com answers."""

    def __init__(self, access_token_lifetime: int = ACCESS_TOKEN_LIFETIME) -> None:
        self.access_token_lifetime = access_token_lifetime
        self.token_requests = 0
        self.introspections = 0
        self._lock = threading.Lock()
        self._clients: dict[str, str] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._access: dict[str, _AccessToken] = {}

    # --- test API -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.running.base_url

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @property
    def revoke_uri(self) -> str:
        return f"{self.base_url}/revoke"

    @property
    def introspection_url(self) -> str:
        """Give to ``Dovecot(introspection_url=...)``: Dovecot appends the bearer token and then
        ``&client_id=&client_secret=``, hence a query (``/introspect/<token>`` works too)."""
        return f"{self.base_url}/introspect?token="

    @property
    def errors(self) -> list[Exception]:
        return self.server.errors if self.server else []

    def add_client(self, client_id: str, secret: str) -> None:
        with self._lock:
            self._clients[client_id] = secret

    def issue_refresh_token(self, client_id: str, user: str, scope: str = GMAIL_SCOPE) -> str:
        """What the consent flow would leave the app with: a refresh token for `user`."""
        token = "1//0" + secrets.token_urlsafe(48)
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"unknown client {client_id}")
            self._refresh[token] = _RefreshToken(client_id, user, scope)
        return token

    def issue_access_token(self, client_id: str, user: str, scope: str = GMAIL_SCOPE) -> str:
        """An access token straight away (no refresh token behind it)."""
        with self._lock:
            return self._mint(client_id, user, scope, None)

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token and the access tokens minted from it (as Google does)."""
        with self._lock:
            self._revoke(refresh_token)

    def expire_access_tokens(self) -> None:
        with self._lock:
            for token in self._access.values():
                token.expires_at = 0.0

    def user_of(self, access_token: str) -> str | None:
        """The user a live access token stands for."""
        with self._lock:
            token = self._access.get(access_token)
            return token.user if token and token.expires_at > time.time() else None

    def make_server(self) -> HttpServer:
        return HttpServer(self._serve)

    # --- HTTP ----------------------------------------------------------------------------------

    def _serve(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        path, _, query = target.partition("?")
        if path == "/token" and method == "POST":
            return self._token(self._form(body), headers)
        if path == "/revoke" and method in ("POST", "GET"):
            form = {**self._form(query.encode()), **self._form(body)}
            return self._revoke_endpoint(form.get("token", ""))
        if path == "/introspect" and method == "GET":
            return self._introspect(self._form(query.encode()).get("token", ""))
        if path.startswith("/introspect/") and method == "GET":  # Dovecot appends "&client_id=.."
            value = path[len("/introspect/") :].split("&", 1)[0]
            return self._introspect(urllib.parse.unquote(value))
        return _google_json(404, {"error": "not_found", "error_description": f"No route {path}"})

    @staticmethod
    def _form(body: bytes) -> dict[str, str]:
        return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}

    def _token(self, form: dict[str, str], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.token_requests += 1
            client_id, secret = form.get("client_id"), form.get("client_secret")
            basic = headers.get("authorization", "")
            if basic.lower().startswith("basic "):
                decoded = base64.b64decode(basic[6:]).decode()
                client_id, _, secret = decoded.partition(":")
                client_id = urllib.parse.unquote_plus(client_id)
                secret = urllib.parse.unquote_plus(secret)
            grant = form.get("grant_type")
            if not grant:
                return _google_error(
                    400, "invalid_request", "Missing required parameter: grant_type"
                )
            if grant != "refresh_token":
                return _google_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
            if not client_id:
                return _google_error(
                    400, "invalid_request", "Could not determine client ID from request."
                )
            if client_id not in self._clients:
                return _google_error(401, "invalid_client", "The OAuth client was not found.")
            if self._clients[client_id] != secret:
                return _google_error(401, "invalid_client", "Unauthorized")
            value = form.get("refresh_token")
            if not value:
                return _google_error(
                    400, "invalid_request", "Missing required parameter: refresh_token"
                )
            refresh = self._refresh.get(value)
            if refresh is None or refresh.revoked:
                return _google_error(400, "invalid_grant", "Token has been expired or revoked.")
            if refresh.client_id != client_id:
                return _google_error(400, "unauthorized_client", "Unauthorized")
            scope = refresh.scope
            if form.get("scope"):
                asked = set(form["scope"].split())
                if not asked <= set(refresh.scope.split()):
                    return _google_error(400, "invalid_scope", "Bad Request")
                scope = " ".join(sorted(asked))
            token = self._mint(client_id, refresh.user, scope, value)
        return _google_json(
            200,
            {
                "access_token": token,
                "expires_in": self.access_token_lifetime,
                "scope": scope,
                "token_type": "Bearer",
            },
        )

    def _mint(self, client_id: str, user: str, scope: str, refresh_token: str | None) -> str:
        token = "ya29." + secrets.token_urlsafe(96)
        expires_at = time.time() + self.access_token_lifetime
        self._access[token] = _AccessToken(client_id, user, scope, expires_at, refresh_token)
        return token

    def _revoke(self, value: str) -> bool:
        if value in self._refresh:
            self._refresh[value].revoked = True
            for token in self._access.values():
                if token.refresh_token == value:
                    token.expires_at = 0.0
            return True
        access = self._access.get(value)
        if access is not None and access.expires_at > time.time():
            access.expires_at = 0.0
            return True
        return False

    def _revoke_endpoint(self, value: str) -> Reply:
        with self._lock:
            done = self._revoke(value)
        if done:
            return _google_json(200, {})
        return _google_error(400, "invalid_token", "Token expired or revoked")

    def _introspect(self, value: str) -> Reply:
        with self._lock:
            self.introspections += 1
            token = self._access.get(value)
            if token is None or token.expires_at <= time.time():
                return _google_json(401, {"active": False})
            return _google_json(
                200,
                {
                    "active": True,
                    "username": token.user,
                    "email": token.user,
                    "client_id": token.client_id,
                    "aud": token.client_id,
                    "scope": token.scope,
                    "exp": int(token.expires_at),
                },
            )


__all__ = [
    "ACCESS_TOKEN_LIFETIME",
    "GMAIL_SCOPE",
    "FakeGoogleOAuth",
    "GmailImapProxy",
    "derive_ids",
    "gm_id",
]
