"""The new text of a reply: what the sender wrote, without the quoted original or signatures.

Pure: text in, text out. `reply_text` scans the body line by line and stops at the first line
that starts the quoted original or a signature:

* an attribution line, possibly wrapped over up to three lines ("On <date>, <name> wrote:",
  "Am ... schrieb ...:", "Le ... a écrit :", "El ... escribió:", "Il ... ha scritto:",
  "Op ... schreef ...:", "Em ... escreveu:", "Den ... skrev ...:", "W dniu ... pisze:",
  "... написал:", "... 書きました:", "... 写道：", or a dated line ending in "<address>:");
* an Outlook header block (From/De/Von/Van/Da/Fra/... followed by Sent/To/Subject/... lines);
* a separator: "-----Original Message-----" and any other "---- title ----" line that is not a
  forward's marker, a line of underscores;
* a signature: a "-- " (or "--") line, a line of em dashes, or a device / app line such as
  "Sent from my iPhone", "Get Outlook for iOS", "Envoyé de mon iPhone",
  "Von meinem iPhone gesendet", "Enviado desde mi iPhone".

Inline replies (the rule chosen): quoted lines are dropped, together with the attribution
line that introduces them, but unquoted lines that come after a quoted block are the sender's
answers and are kept, in order (so a bottom-posted or interleaved reply survives). The one
exception is a lower-case line directly under a long quoted line: that is the quoted text
wrapped by a mail client, not an answer. An attribution line followed by *unquoted* text, an
Outlook block, a separator or a signature still ends the new text.

Quoted lines start with `>`; a run of two or more lines starting with `|`, `»` or `:` (and a
space) is quoted too (one such line, or a table row ending in `|`, is the sender's). A line
directly above a quoted block introduces it even without "wrote:" when it holds a date with
an address, a localised "On" or a colon ("Am 15.01.2024 um 14:30 Hans <h@x.de>"), or an
address with a colon or verb ("Анна <anna@x.ru>:").

Forwards: the forward's marker ("---------- Forwarded message ---------", "Begin forwarded
message:", "Weitergeleitete Nachricht", "Message transféré", ...) and the header block below it
are dropped and the forwarded mail is kept as content; so is an Outlook block whose subject
starts with a forward prefix (FW:, WG:, TR:, RV:, ...), and a header block pasted above the
sender's text. A body that is nothing but quote gives "" (the sender wrote nothing new).

`mail-parser-reply` then looks at what is left: when it finds one of its header patterns (it
knows Czech, Korean, Swedish, Danish, ... forms we do not), the text is cut there too. Its own
signature rules are not used: they cut too eagerly ("Thanks," or "- item" lines).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mailparser_reply import EmailReplyParser

__all__ = ["LIBRARY_LANGUAGES", "reply_text"]

#: Languages `mail-parser-reply` 1.36 knows; used when the caller gives none.
LIBRARY_LANGUAGES: tuple[str, ...] = (
    "en",
    "de",
    "fr",
    "es",
    "it",
    "nl",
    "pl",
    "sv",
    "da",
    "cs",
    "ja",
    "ko",
    "zh",
)

# The library is skipped above this size: its regular expressions are not linear-time.
_LIBRARY_MAX_CHARS = 20_000
# Attribution lines longer than this (joined) are not considered: bounds the regex work.
_MAX_HEADER_CHARS = 400
# A quoted line at least this long may have been wrapped by the mail client.
_WRAP_WIDTH = 50


def _alternatives(words: str) -> str:
    """A pattern for exactly the literal `|`-separated `words`, factored by their common
    prefixes. sre tries an alternation's branches one by one; factored, a line's first letter
    rules out most of them at once (matching every line against the markers was the scan's
    largest cost). A node of several branches is led by a lookahead of their first letters:
    sre tests a case-insensitive branch's letter only by entering it, so a line that starts
    none of them was tried against each; the class tells at once (what it admits, a branch
    would have matched)."""
    trie: dict[str, Any] = {}
    for word in words.split("|"):
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here

    def emit(node: dict[str, Any]) -> str:
        chars = [char for char in node if char]
        branches = [re.escape(char) + emit(node[char]) for char in chars]
        if not branches:
            return ""
        if len(branches) == 1:
            body = branches[0]
        else:
            first = "".join(map(re.escape, chars))
            body = f"(?=[{first}])(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return "(?:" + emit(trie) + ")"


_QUOTED = re.compile(r"^\s*>")
# Other clients' quote markers: "| ", "» ", ": " (and their bare forms on empty quoted lines).
# Alone, "| a |" is a table row and ": x" a label, so these count only in a run (see `_quotes`).
_ALT_QUOTED = re.compile(r"^\s*([|»:])(?:\s|$)")
_TABLE_ROW = re.compile(r"\|\s*$")
# The first character after leading white space of every line the two patterns above match
# (`\s` and str.lstrip() skip the same characters).
_QUOTE_MARKS = frozenset(">|»:")

# --- attribution lines ---------------------------------------------------------------------------

# Verbs that end an attribution line: "<date>, <name> wrote:".
_END_VERBS: tuple[str, ...] = (
    " wrote",
    " has written",
    " a écrit",
    " escribió",
    " escribio",
    " ha escrito",
    " ha scritto",
    " scrisse",
    " escreveu",
    " pisze",
    " napisał(a)",
    " napisała",
    " napisał",
    " nadesłał",
    " napsal(a)",
    " napsala",
    " napsal",
    " написал(а)",
    " написала",
    " написал",
    " пишет",
    " kirjoitti",
    " írta",
    " yazdı",
    "書きました",
    "のメッセージ",
    "写道",
    "寫道",
    "작성하였습니다",
    "작성",
)
# Verbs followed by the name: "Am <date> schrieb <name>:".
_MID_VERBS = r"schrieb|geschrieben|skrev|schreef|geschreven"

_MID_VERB_LINE = re.compile(rf"(?:^|[\s,])(?:{_MID_VERBS})\b.{{0,200}}[:：]$", re.I)
# Localised "On" that starts an attribution line.
_ON_PREFIX = re.compile(
    r"^(?:On|Am|Le|El|Il|In\s+data|Op|Em|Den|W\s+dniu|Dnia|Dne|Pada|Na|El\s+día)\s", re.I
)
# A dated line ending in an address and a colon: '2017-11-24 16:32 GMT+01:00 Baptiste <a@b.c>:'.
_ADDRESS_COLON = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+\s*>?\)?\s*[:：]$")
_DATE_HINT = re.compile(r"\d{1,2}[:.h]\d{2}|\b(?:19|20)\d{2}\b|\d{4}年|\d{1,2}月")


def _quotes(lines: Sequence[str]) -> list[bool]:
    """Which lines are quoted: every `>` line, and runs of two or more lines sharing one of the
    other markers (a single "| x" or ": x" line is the sender's own, as is a table row)."""
    i, n = 0, len(lines)
    if _QUOTE_MARKS.isdisjoint(line.lstrip()[:1] for line in lines):
        return [False] * n  # no line starts with a marker: most mail, one cheap pass
    mask = [bool(_QUOTED.match(line)) for line in lines]
    while i < n:
        match = _ALT_QUOTED.match(lines[i])
        if mask[i] or not match:
            i += 1
            continue
        j = i
        while (
            j < n
            and (m := _ALT_QUOTED.match(lines[j]))
            and m.group(1) == match.group(1)
            and not _TABLE_ROW.search(lines[j])
        ):
            j += 1
        if j - i >= 2:
            mask[i:j] = [True] * (j - i)
        i = max(j, i + 1)
    return mask


def _is_attribution(joined: str) -> bool:
    text = joined.strip()
    if not text or len(text) > _MAX_HEADER_CHARS or _QUOTED.match(text):
        return False
    # Cheap test first: every form ends in a colon or in one of the verbs.
    tail = " " + " ".join(text[-60:].split()).lower().rstrip(" -:：")
    ends_verb = tail.endswith(_END_VERBS)
    if not ends_verb and text[-1] not in ":：":
        return False
    has_date = bool(re.search(r"\d", text))
    dated_or_on = has_date or "@" in text or bool(_ON_PREFIX.match(text))
    if ends_verb and dated_or_on:
        # "On ... wrote:" must start with a localised "On" or carry a date.
        return bool(_ON_PREFIX.match(text)) or has_date
    if _MID_VERB_LINE.search(text) and dated_or_on:
        return bool(_ON_PREFIX.match(text)) or has_date
    if _ADDRESS_COLON.search(text):
        before = text[: text.rfind("@")]
        return bool(_DATE_HINT.search(before))
    return False


# The last word of each verb: a joined attribution ends with one (or in a colon), so a line that
# does not cannot end one (checked once a line, where `_is_attribution` ran up to three times).
_END_WORDS = tuple(sorted({verb.split()[-1] for verb in _END_VERBS}))


def _ends(whole: str) -> list[bool]:
    """For each line of `whole`: False only when no attribution whose last line it is can pass
    `_is_attribution`'s first test (it ends in a colon or one of the verbs, after spaces,
    dashes and colons); True where in doubt, as it only lets the scan skip lines. A blank line
    is False: it ends the lines an attribution can span. One lower() for the text and no call a
    line: this was the scan's commonest cost."""
    return [
        bool(line) and (line[-1] in ":：-" or line.endswith(_END_WORDS))
        for line in (part.rstrip() for part in whole.lower().split("\n"))
    ]


def _attribution_span(lines: Sequence[str], i: int, ends: Sequence[bool] | None = None) -> int:
    """How many lines (1-3) from `i` form an attribution line; 0 when none does. `ends`:
    `_ends` of the lines, when the caller has it."""
    if ends is not None and not any(ends[i : i + 3]):
        return 0  # only `_is_attribution` gives a span, and it cannot pass on these lines
    joined = ""
    for k in range(3):
        j = i + k
        if j >= len(lines) or not lines[j].strip():
            return 0
        if _QUOTED.match(lines[j]) and not (k and _LONE_COLON.match(lines[j])):
            return 0
        joined = f"{joined} {lines[j].strip()}" if joined else lines[j].strip()
        if len(joined) > _MAX_HEADER_CHARS:
            return 0
        if (ends[j] if ends is not None else True) and _is_attribution(joined):
            if k and any(_steals(lines, i, s, k + 1 - s) for s in range(1, k + 1)):
                return 0
            return k + 1
    return 0


# Gmail may wrap "... <a@b.c>:" so that the last line is only ">:".
_LONE_COLON = re.compile(r"^\s*>\s*[:：]\s*$")


# A localised "On" inside a line: where an attribution starts after the sender's own words
# ("reply On Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:", "text--- On ... wrote:").
_INLINE_ON = re.compile(r"(?:\s+|\s*-{2,}\s*)(?=(?:On|Am|Le|El|Il|Op|Em|Den|W dniu)\s)")


def _own_words(lines: Sequence[str], i: int, span: int) -> str:
    """The sender's text before an attribution that starts mid-line `i`, or ""."""
    line = lines[i]
    following = [part.strip() for part in lines[i + 1 : i + span]]
    for match in _INLINE_ON.finditer(line):
        head = line[: match.start()].rstrip(" -")
        rest = line[match.end() :]
        if head.strip() and _is_attribution(" ".join([rest.strip(), *following])):
            return head
    return ""


def _steals(lines: Sequence[str], i: int, s: int, count: int) -> bool:
    """Whether the header starting at `i + s` would be glued to the user's line `i`.

    A wrapped attribution must start at `i`, not on the sender's own line just above it:
    reject the join when a shorter tail is an attribution that can start a header by itself
    (it opens with a localised "On" or a date), unless `i` opens with "On" and the tail
    does not ("On Nov 21, 2014," / "at 10:18," / "John <j@x.y> wrote:").
    """
    tail = lines[i + s : i + s + count]
    if not _is_attribution(" ".join(line.strip() for line in tail)):
        return False
    head = tail[0].strip()
    tail_on = bool(_ON_PREFIX.match(head))
    if not tail_on and not _DATE_HINT.search(head):
        return False
    return tail_on or not _ON_PREFIX.match(lines[i].strip())


# --- Outlook header blocks -----------------------------------------------------------------------

_FROM_WORDS = (
    "From|De|Von|Van|Da|Fra|Från|Od|От|От кого|Lähettäjä|Feladó|Kimden|Afzender"
    "|差出人|发件人|寄件者|보낸 사람"
)
_FROM_KEYS = _alternatives(_FROM_WORDS)
_OTHER_KEYS = (
    r"Sent|Date|To|Subject|Cc|Bcc|Reply-To|MIME-Version|Message-ID|Content-Type|Organization"
    r"|Envoyé|Envoyé le|Date d'envoi|À|A|Objet|Sujet|Copie|Copie à"
    r"|Message du|Gesendet|An|Betreff|Datum|Kopie|Verzonden|Aan|Onderwerp|Inviato|Oggetto"
    r"|Enviado|Enviada|Fecha|Para|Asunto|Assunto|Data|Dato|Sendt|Til|Emne|Skickat|Till|Ämne"
    r"|Wysłano|Wysłany|Do|Temat|Odesláno|Komu|Předmět|Отправлено|Дата|Кому|Тема"
    r"|Lähetetty|Vastaanottaja|Aihe|Elküldve|Címzett|Tárgy|Gönderildi|Kime|Konu"
    r"|送信日時|宛先|件名|发送时间|收件人|主题|日期|寄件日期|收件者|主旨|보낸 날짜|받는 사람|제목"
)
_KEY_PREFIX = r"^\s*[*_]{0,2}(?:"
_KEY_SUFFIX = r")[*_]{0,2}\s*[:：]"
_FROM_LINE = re.compile(_KEY_PREFIX + _FROM_KEYS + _KEY_SUFFIX, re.I)
_OTHER_LINE = re.compile(_KEY_PREFIX + _OTHER_KEYS + _KEY_SUFFIX, re.I)


def _header_block_start(lines: Sequence[str], i: int) -> int | None:
    """The first line of an Outlook header block whose From line is `i`, or None."""
    if len(lines[i]) > _MAX_HEADER_CHARS or not _FROM_LINE.match(lines[i]):
        return None
    found = False
    for j in range(i + 1, min(i + 5, len(lines))):
        if not lines[j].strip():
            break
        if _OTHER_LINE.match(lines[j]) or _FROM_LINE.match(lines[j]):
            found = True
            break
    if not found:
        # A block may also start with its Subject/Date lines (Hotmail): look above.
        above = i - 1
        if above < 0 or not _OTHER_LINE.match(lines[above]):
            return None
    start = i
    while start > 0 and _OTHER_LINE.match(lines[start - 1]) and len(lines[start - 1]) < 200:
        start -= 1
    return start


# --- separators and signatures -------------------------------------------------------------------

_SEPARATOR_WORDS = (
    "Begin forwarded message|Anfang der weitergeleiteten Nachricht"
    "|Début du message réexpédié|Inicio del mensaje reenviado"
    "|Forwarded message|Original Message|Original message follows"
)
_SEPARATORS = [
    re.compile(r"^\s*-{3,}\s*[^\s-].{0,120}?\s*-{3,}\s*$"),  # ---- Original Message ----
    re.compile(r"^\s*_{2,}\s*$"),  # Outlook / mailing-list rule
    re.compile(r"^\s*" + _alternatives(_SEPARATOR_WORDS) + r"\s*[:.]?\s*$", re.I),
]

# One pattern for the three: one match a line instead of three.
_SEPARATOR = re.compile(
    "|".join(f"(?{'i' if p.flags & re.I else ''}:{p.pattern})" for p in _SEPARATORS)
)

_SIGNATURE_DELIMITER = re.compile(r"^(?:--|—+|–)\s*$")
_DEVICE_WORDS = (
    "Sent from my|Sent from|Sent with|Sent via|Sent using|Get Outlook for"
    "|Envoyé de mon|Envoyé depuis mon|Envoyé depuis|Envoyé à partir de|Envoyé avec"
    "|Von meinem|Gesendet von|Gesendet mit|Gesendet vom"
    "|Enviado desde mi|Enviado desde|Enviado de mi|Enviado do meu|Enviado do"
    "|Inviato da|Inviato dal mio|Verzonden vanaf|Verstuurd vanaf|Verzonden met"
    "|Skickat från min|Skickat från|Sendt fra min|Sendt fra|Lähetetty"
    "|Wysłane z mojego|Wysłane z|Отправлено с моего|Отправлено из"
    "|从我的|發自我的|iPhoneから送信|Android携帯からの送信"
)
_DEVICE_PREFIX = re.compile(r"^\s*" + _alternatives(_DEVICE_WORDS) + r"\b", re.I)
_SENT = re.compile(r"^\s*Sent (?:from|with|via|using) (\S+)", re.I)
_TRAILING_LINK = re.compile(r"\s*(?:<[^>]*>|\([^)]*\)|\[[^\]]*\])\s*$")


def _is_device_signature(line: str) -> bool:
    if len(line) > 200 or not _DEVICE_PREFIX.match(line):
        return False
    sent = _SENT.match(line)
    if sent:
        # "Sent from my ...", "Sent from a ...", "Sent from TypeApp"; not "Sent from the office".
        word = sent.group(1)
        if (
            word.lower() not in {"my", "a", "an"}
            and not word[:1].isupper()
            and not word[:1].isdigit()
        ):
            return False
    bare = _TRAILING_LINK.sub("", line.strip()).removesuffix(".")
    # "Sent from my desk, is much easier then my mobile phone." is a sentence, not a signature.
    return not re.search(r"[,;.!?]", bare) and len(bare.split()) <= 9


def _is_stop(lines: Sequence[str], i: int) -> bool:
    line = lines[i]
    if _SIGNATURE_DELIMITER.match(line) or _is_device_signature(line):
        return True
    return bool(_SEPARATOR.match(line))


# --- forwards -------------------------------------------------------------------------------------

# A forward's own marker line; what follows is its header block, then the forwarded mail, which
# is the content of a forward (unlike a reply's quoted original).
_FORWARD_WORDS = (
    "Begin forwarded message|Forwarded message|Forwarded email|Forwarded e-mail"
    "|Anfang der weitergeleiteten Nachricht|Weitergeleitete Nachricht"
    "|Début du message réexpédié|Message transféré|Inicio del mensaje reenviado"
    "|Mensaje reenviado|Messaggio inoltrato|Doorgestuurd bericht|Mensagem encaminhada"
    "|Videresendt meddelelse|Videresendt melding|Vidarebefordrat meddelande"
    "|Wiadomość przekazana|Přeposlaná zpráva|Пересылаемое сообщение|Пересланное сообщение"
    "|転送されたメッセージ|转发的邮件|轉寄的郵件|전달된 메시지"
)
_FORWARD = re.compile(
    r"^\s*(?:-{2,}\s*)?" + _alternatives(_FORWARD_WORDS) + r"\s*[:.]?\s*(?:-{2,})?\s*$", re.I
)
# A header block whose subject carries a forward prefix is a forward too (Outlook has no marker).
_FORWARD_SUBJECT = re.compile(
    r"^\s*[*_]{0,2}(?:Subject|Betreff|Objet|Sujet|Asunto|Oggetto|Onderwerp|Assunto|Emne|Ämne"
    r"|Temat|Předmět|Тема|件名|主题|主旨|제목)[*_]{0,2}\s*[:：]\s*"
    r"(?:Fwd?|FW|WG|TR|RV|Doorst|VS|ENC|PD|Pfwd|Пересл|转发|轉寄|転送|전달)\s*[:：]",
    re.I,
)


def _block_end(lines: Sequence[str], i: int) -> int:
    """The index after the header block starting at `i` (its lines run to the first blank)."""
    while i < len(lines) and lines[i].strip():
        i += 1
    return i


def _is_forward_block(lines: Sequence[str], start: int) -> bool:
    return any(_FORWARD_SUBJECT.match(line) for line in lines[start : _block_end(lines, start)])


# --- quotes without a full attribution ------------------------------------------------------------

_ADDRESS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def _introduces(text: str) -> bool:
    """Whether `text`, directly above a quoted block, is the line that introduces it even
    without a "wrote:": a localised date with a name or address ("15.01.2024 14:30, Jan
    <jan@x.pl>"), or an address with a colon or a verb ("Jan <jan@x.pl> wrote:")."""
    if len(text) > 200 or text.rstrip().endswith((".", "?", "!")):
        return False
    tail = " " + " ".join(text[-60:].split()).lower().rstrip(" -:：")
    ends = text.endswith((":", "：")) or tail.endswith(_END_VERBS)
    address = bool(_ADDRESS.search(text))
    if _DATE_HINT.search(text):
        return address or ends or bool(_ON_PREFIX.match(text))
    return address and ends


def _introduction_span(lines: Sequence[str], i: int, quoted: Sequence[bool]) -> int:
    """1 when line `i` introduces the quoted block right below it, else 0."""
    after = _next_content(lines, i + 1)
    if after >= len(lines) or not quoted[after] or quoted[i]:
        return 0
    return 1 if _introduces(lines[i].strip()) else 0


# --- the scan ------------------------------------------------------------------------------------


def _normalise(text: str) -> list[str]:
    if "\r" in text:  # one quick scan; most text the parser gives has none
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return list(map(str.rstrip, text.split("\n")))


def _next_content(lines: Sequence[str], i: int) -> int:
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _inline(pattern: re.Pattern[str]) -> str:
    return f"(?{'i' if pattern.flags & re.I else ''}:{pattern.pattern})"


# Every marker a line can start with (forward, signature, device line, separator, a header
# block's From line) in one pattern: a line it does not match is none of them, and is tested
# by one match instead of five.
_ANY_MARKER = re.compile(
    "|".join(
        _inline(p) for p in (_FORWARD, _SIGNATURE_DELIMITER, _DEVICE_PREFIX, _SEPARATOR, _FROM_LINE)
    )
)

# What must start a line (after white space) for `_quotes` to find a quote mark or for
# `_ANY_MARKER` to match it: a quote mark, a dash, `_` or `*` (rules, signature delimiters, a
# forward's dashes, a bold From key), a From key and its colon, or a marker's first words. Run
# once over the text (each line after its newline: sre finds the newlines at C speed), it tells
# plain mail in one call where `_quotes`, `_ends` and a marker match per line took three passes.
_STEERING_START = re.compile(
    r"\n\s*(?:[>|»:\-—–_*]"
    rf"|(?i:{_FROM_KEYS})[*_]{{0,2}}\s*[:：]"
    rf"|(?i:{_alternatives('|'.join([_FORWARD_WORDS, _DEVICE_WORDS, _SEPARATOR_WORDS]))}))"
)
# What must end a line (before white space, lower-cased) for `_ends` to let it end an
# attribution: a colon, a dash or a verb's last word. Searched in the reversed text, where
# line ends follow newlines as line starts do above.
_STEERING_END = re.compile(
    r"\n\s*(?:[:：\-]|" + _alternatives("|".join(word[::-1] for word in _END_WORDS)) + ")"
)


def _may_steer(whole: str) -> bool:
    """False only when no line of `whole` (lines joined with newlines) can steer the scan: no
    line starts with a quote mark or a marker, none can end an attribution. True where in
    doubt (the scan then looks line by line)."""
    return bool(
        _STEERING_START.search("\n" + whole) or _STEERING_END.search("\n" + whole.lower()[::-1])
    )


def _kept_all(lines: list[str]) -> list[str]:
    """Every line, as the loop in `_scan` keeps them when nothing steers it: a line of white
    space alone as an empty one."""
    return _trim([line if line.strip() else "" for line in lines])


def _scan(
    lines: list[str], whole: str | None = None, *, shortcut: bool = True
) -> tuple[list[str], bool]:
    """The kept lines, and whether everything dropped was quote (no cut at a marker).
    `whole`: the lines joined with newlines, when the caller has it; `shortcut`: False runs
    the whole scan even where it would keep every line (tests compare the two)."""
    whole = "\n".join(lines) if whole is None else whole
    if shortcut and not _may_steer(whole):
        return _kept_all(lines), True  # no line can steer the loop below: it keeps every one
    quoted = _quotes(lines)
    any_quoted = any(quoted)  # else no line introduces a quote
    ends = _ends(whole)
    if shortcut and not any_quoted and not any(ends) and not any(map(_ANY_MARKER.match, lines)):
        # No quote, marker or attribution: the loop below would keep every line.
        return _kept_all(lines), True
    kept: list[str] = []
    origin: list[int] = []  # the index in `lines` of each kept line
    quoted_before = False  # the previous line was quoted (or a wrapped quoted line)
    last_quoted_len = 0
    removed = False  # something was dropped since the last kept line
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        if quoted[i]:
            quoted_before, last_quoted_len, removed = True, len(line), True
            i += 1
            continue
        if not line.strip():
            quoted_before = False
            if not (removed and kept and not kept[-1]):
                kept.append("")
                origin.append(i)
            i += 1
            continue
        if quoted_before and last_quoted_len >= _WRAP_WIDTH and line.lstrip()[:1].islower():
            last_quoted_len, removed = len(line), True  # a quoted line the client wrapped
            i += 1
            continue
        quoted_before = False
        marker = bool(_ANY_MARKER.match(line))
        if marker and _FORWARD.match(line):
            # The forward's marker and its header block go; the forwarded mail is content.
            i, removed = _block_end(lines, _next_content(lines, i + 1)), True
            continue
        if marker and _is_stop(lines, i):
            return _trim(kept), False
        block = _header_block_start(lines, i) if marker else None
        if block is not None:
            if _is_forward_block(lines, block) or not any(k.strip() for k in kept):
                # A forward, or headers pasted above the text: drop the block, keep the rest.
                while origin and origin[-1] >= block:
                    origin.pop()
                    kept.pop()
                i, removed = _block_end(lines, i), True
                continue
            # Lines of the block above `i` were kept already: take them back.
            while origin and origin[-1] >= block:
                origin.pop()
                kept.pop()
            return _trim(kept), False
        span = _attribution_span(lines, i, ends) if any(ends[i : i + 3]) else 0
        if span:
            own = _own_words(lines, i, span)
            if own:
                kept.append(own)
                origin.append(i)
            after = _next_content(lines, i + span)
            if after < n and quoted[after]:
                i, removed = after, True  # an attribution and its quote: drop, keep scanning
                continue
            return _trim(kept), False
        span = _introduction_span(lines, i, quoted) if any_quoted else 0
        if span:
            i, removed = i + span, True
            continue
        kept.append(line)
        origin.append(i)
        removed = False
        i += 1
    return _trim(kept), True


_RULE = re.compile(r"^\s*[-_=*~—–]{2,}\s*$")


def _trim(kept: list[str]) -> list[str]:
    while kept and (not kept[-1].strip() or _RULE.match(kept[-1])):
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    return kept


# --- the library ---------------------------------------------------------------------------------


def _library_cut(lines: list[str], languages: Sequence[str]) -> list[str]:
    """Cut `lines` where mail-parser-reply sees a reply header; unchanged on any failure."""
    text = "\n".join(lines)
    if len(text) > _LIBRARY_MAX_CHARS:
        return lines
    try:
        message = EmailReplyParser(languages=list(languages)).read(text=text)
        replies = list(message.replies)
        if len(replies) < 2:
            return lines
        header = str(replies[1].headers).strip()
    except Exception:
        return lines
    first = header.split("\n", 1)[0].strip().lstrip("> ").strip()
    # Its Outlook rule fires on any two lines such as "To: ..." and "Date: ..."; only a block
    # that opens with a sender is trusted.
    if not first or (_OTHER_LINE.match(first) and not _FROM_LINE.match(first)):
        return lines
    for index, line in enumerate(lines):
        if index and line.strip().lstrip("> ").strip() == first:
            cut = _trim(lines[:index])
            return cut if any(part.strip() for part in cut) else lines
    return lines


# --- the API -------------------------------------------------------------------------------------

_MAYBE_HEADER = re.compile(r"^[\s>]*[^\s:][^:\n]{0,80}:(\s|$)")


def reply_text(text: str, *, languages: Sequence[str] | None = None) -> str:
    """The new text of the reply `text`: no quoted original, no signature; never raises.

    Returns the text with `\\n` line ends, each line and the whole stripped of trailing
    whitespace. A body that is all quote gives ""; when a marker (a signature, a header
    block) cuts everything, the whole body is returned, stripped, rather than nothing. Our
    own rules know every language listed in the module docstring whatever `languages` says;
    `languages` only narrows mail-parser-reply's patterns (default: all it knows,
    `LIBRARY_LANGUAGES`).
    """
    try:
        lines = _normalise(text)
        joined = "\n".join(lines)
        whole = joined.strip("\n")
        if not whole:
            return ""
        kept, only_quote = _scan(lines, joined)
        if not kept and only_quote:
            return ""  # nothing but quoted text: the sender wrote nothing new
        if len(kept) == len(lines) and any(
            ":" in line and _MAYBE_HEADER.match(line) for line in kept[1:]
        ):
            # The library is a safety net for header forms our rules miss, and its regexes cost
            # more than everything else here: it runs only when our rules cut nothing and a
            # line could be such a header.
            langs = tuple(languages) if languages else LIBRARY_LANGUAGES
            kept = _library_cut(kept, langs)
        result = "\n".join(kept).rstrip()
        return result if result.strip() else whole
    except Exception:
        return text.replace("\r\n", "\n").replace("\r", "\n").strip()
