"""`mailfiler config check FILE`: every problem of a configuration file in one pass.

The pure checks (`check_config`: the file's shape, every part, the parts' references) and
then what only this machine can tell: that a local mailbox's path and a named CA bundle exist,
and which named app settings are not set here. What only a run can tell (that a server answers,
that a password works) is said as notes, so a clean check does not promise it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..core.config import EwsMailbox, GraphMailbox, ImapMailbox
from ..core.config.loading import ConfigReport, check_config


def run_config_check(file: str, as_json: bool) -> int:
    """Print the report of `file`; 0 when it has no error, 1 when it has."""
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return _print(
            file,
            [{"place": "", "line": None, "message": f"cannot read the file: {why}"}],
            [],
            [],
            None,
            as_json,
        )
    report = check_config(text, file)
    base = Path(file).resolve().parent  # relative paths in the file are relative to the file
    _check_files(report, base)
    report.problems.sort(key=lambda p: p.line or 0)
    errors = [{"place": p.path, "line": p.line, "message": p.message} for p in report.problems]
    settings = _named_settings(report)
    warnings = [
        f"{where} names app setting {name}, which is not set here"
        for name, where in settings.items()
        if not os.environ.get(name)
    ]
    counts = None
    if report.config is not None and not errors:
        config = report.config
        counts = (len(config.mailboxes), len(config.record_types), len(config.routes))
    return _print(file, errors, warnings, _notes(report), counts, as_json)


def _check_files(report: ConfigReport, base: Path) -> None:
    """Paths the file names that must exist here, read from the file as written (a mailbox
    with another problem still has its path checked)."""
    items = report.data.get("mailboxes") if isinstance(report.data, dict) else None
    for i, raw in enumerate(items if isinstance(items, list) else []):
        if not isinstance(raw, dict):
            continue
        path = raw.get("path")
        if raw.get("kind") == "local" and isinstance(path, str) and not (base / path).exists():
            report.add(
                ("mailboxes", i, "path"),
                f"{path!r} does not exist (looked for {base / path}); give a folder of .eml "
                "files, a Maildir or an mbox file, relative to this file",
            )
        smtp = raw.get("smtp")
        for loc, bundle in (
            (("mailboxes", i, "ca_bundle"), raw.get("ca_bundle")),
            (
                ("mailboxes", i, "smtp", "ca_bundle"),
                smtp.get("ca_bundle") if isinstance(smtp, dict) else None,
            ),
        ):
            if isinstance(bundle, str) and not (base / bundle).is_file():
                report.add(loc, f"{bundle!r} is not a file (looked for {base / bundle})")


def _named_settings(report: ConfigReport) -> dict[str, str]:
    """Every app setting the file names for a secret -> its place in the file."""
    if report.config is not None:
        return report.config.secret_settings()
    out: dict[str, str] = {}
    for i, mailbox in report.mailboxes:
        for key, value in mailbox.model_dump().items():
            if key.endswith("_setting") and value:
                out[value] = f"mailboxes[{i}].{key}"
    return out


def _notes(report: ConfigReport) -> list[str]:
    """What cannot be known before the app runs, per part that parsed."""
    notes = []
    poll = "shows at the first poll (`mailfiler status`)"
    for i, mb in report.mailboxes:
        place = report.place(("mailboxes", i))
        if isinstance(mb, ImapMailbox):
            secret = mb.password_setting or "the oauth block's credential"
            notes.append(
                f"{place}: whether {mb.host}:{mb.server_port} answers and {mb.username} can sign "
                f"in with {secret} {poll}"
            )
        elif isinstance(mb, EwsMailbox):
            notes.append(f"{place}: whether {mb.endpoint} answers and lets {mb.email} in {poll}")
        elif isinstance(mb, GraphMailbox):
            notes.append(
                f"{place}: whether the app {mb.client_id or '(managed identity)'} may read "
                f"{mb.user} in tenant {mb.tenant_id} {poll}"
            )
        smtp = getattr(mb, "smtp", None)
        if smtp is not None:
            notes.append(
                f"{place}.smtp: whether {smtp.host}:{smtp.server_port} accepts our mail shows at "
                "the first reply (`mailfiler messages show`)"
            )
    config = report.config
    for i, hook in enumerate(config.events.webhooks if config else ()):
        notes.append(
            f"events.webhooks[{i}]: whether {hook.url} accepts events shows at the first "
            "delivery (`mailfiler events dead`)"
        )
    return notes


def _print(
    file: str,
    errors: list[dict[str, Any]],
    warnings: list[str],
    notes: list[str],
    counts: tuple[int, int, int] | None,
    as_json: bool,
) -> int:
    if as_json:
        out = {"file": file, "ok": not errors, "errors": errors, "warnings": warnings}
        out["notes"] = notes
        print(json.dumps(out, ensure_ascii=False))
        return 1 if errors else 0
    for error in errors:
        where = f"{file}:{error['line']}" if error["line"] else file
        place = f" {error['place']}:" if error["place"] else ""
        print(f"{where}:{place} {error['message']}", file=sys.stderr)
    for warning in warnings:
        print(f"{file}: warning: {warning}", file=sys.stderr)
    if errors:
        n = len(errors)
        print(
            f"{file}: {n} error{'s' if n > 1 else ''}; fix them and run the check again",
            file=sys.stderr,
        )
        return 1
    if counts is not None:
        print(
            f"{file}: OK: {counts[0]} mailbox(es), {counts[1]} record type(s), {counts[2]} route(s)"
        )
    for note in notes:
        print(f"{file}: note: {note}")
    return 0
