"""The `mailfiler` command."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import logging
import os
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.config import ConfigError

if TYPE_CHECKING:
    from ..services.context import AppContext
    from ..sources.local import LocalSource
    from .host import LocalHost

REPO = Path(__file__).resolve().parents[2]
REFUSED = 3  # exit status: the storage serves another configuration (services/serving.py)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("azure", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _prepare_env(args: argparse.Namespace) -> None:
    from .host import load_local_settings

    settings_file = Path(getattr(args, "settings", None) or REPO / "local.settings.json")
    load_local_settings(settings_file)
    if getattr(args, "config", None):
        os.environ["MAILFILER_CONFIG"] = str(Path(args.config).resolve())


def cmd_config_check(args: argparse.Namespace) -> int:
    from .config_check import run_config_check

    return run_config_check(args.file, args.json)


def _context() -> AppContext:
    from azure.core.exceptions import ServiceRequestError

    from ..services.context import build_context, set_context
    from ..services.health import storage_answers
    from ..settings import AppSettings
    from ..store.stores import Stores

    settings = AppSettings()
    if not storage_answers(Stores.connect(settings.storage())):
        # Said now (main() prints where and how to start it), not after the SDK's minutes of
        # retries.
        raise ServiceRequestError("storage unreachable")
    ctx = build_context(settings)
    set_context(ctx)
    return ctx


def _host(ctx: AppContext, *, in_order: bool = False) -> LocalHost:
    from .host import LocalHost, QueueSettings, registered_functions

    sys.path.insert(0, str(REPO))
    app_module = importlib.import_module("function_app")
    return LocalHost(
        functions=registered_functions(app_module),
        queues=ctx.stores.queues,
        settings=QueueSettings.from_host_json(REPO / "host.json"),
        lease_seconds=int(os.environ.get("MAILFILER_LOCAL_LEASE_SECONDS", "300")),
        in_order=in_order,
    )


def _claim_storage(ctx: AppContext, force: bool) -> bool:
    """Register this process's configuration as the one the storage serves (services/
    serving.py); False, with the reason on stderr, if another one is serving it."""
    from ..services.serving import ConfigConflict, claim

    try:
        claim(ctx.stores, ctx.config, str(ctx.settings.config_path), datetime.now(UTC), force=force)
    except ConfigConflict as exc:
        print(f"mailfiler: refusing to start: {exc}", file=sys.stderr)
        return False
    return True


def _beat_seconds() -> float:
    from ..services.serving import LOCAL_BEAT

    return float(os.environ.get("MAILFILER_LOCAL_HEARTBEAT_SECONDS", LOCAL_BEAT))


def cmd_import(args: argparse.Namespace) -> int:
    from ..settings import AppSettings, load_config
    from ..sources.local import LocalSource, LocalSourceError

    _prepare_env(args)
    config = load_config(AppSettings().config_path)  # before storage: a typo fails fast
    if config.mailbox(args.mailbox) is None:
        names = ", ".join(m.name for m in config.mailboxes)
        print(
            f"mailbox {args.mailbox!r} is not in the configuration (known: {names})",
            file=sys.stderr,
        )
        return 1
    ctx = _context()
    try:
        source = LocalSource(Path(args.path))
    except LocalSourceError as exc:
        print(exc, file=sys.stderr)
        return 1
    # Even without --process: what it queues is read by whoever serves the storage.
    if not _claim_storage(ctx, args.force):
        return REFUSED
    from ..services.serving import Heartbeat

    heartbeat = Heartbeat(
        ctx.stores, ctx.config, str(ctx.settings.config_path), lambda _: None, _beat_seconds()
    ).start()
    try:
        return _import(args, ctx, source)
    finally:
        heartbeat.stop()


def _import(args: argparse.Namespace, ctx: AppContext, source: LocalSource) -> int:
    from tqdm import tqdm

    from ..services.ingest import ingest_mailbox

    with tqdm(
        unit="msg",
        desc=f"import {source.kind}",
        disable=args.quiet or None,
    ) as bar:
        summary = ingest_mailbox(
            ctx.stores,
            args.mailbox,
            source,
            now=datetime.now(UTC),
            progress=bar.update,
            on_count=lambda n: setattr(bar, "total", n),
        )
    print(
        f"{args.path}: {summary.seen} found, {summary.queued} queued, "
        f"{summary.skipped} already imported, {len(summary.failed)} failed"
    )
    for source_id, reason in summary.failed[:20]:
        print(f"  failed: {source_id}: {reason}", file=sys.stderr)
    if args.process:
        host = _host(ctx, in_order=not args.batches)
        processed = _drain_with_progress(host, summary.queued, shown=not args.quiet)
        print(f"processed: {processed}")
    return 1 if summary.failed else 0


# The stages' per-mail INFO lines (map, file, mailbox actions): a bar replaces them on a terminal.
PER_MAIL_LOGGERS = ("shared.stages", "shared.services.actions")


def _drain_with_progress(host: LocalHost, queued: int, *, shown: bool) -> dict[str, int]:
    """Run the queues empty; with `shown`, one progress bar of the mail mapped (rate, ETA) in
    place of two log lines per mail, which stay for --log-level DEBUG."""
    from tqdm import tqdm

    if not shown or queued == 0 or logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return host.drain()
    quiet = [logging.getLogger(name) for name in PER_MAIL_LOGGERS]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    result: dict[str, int] = {}
    failed: list[BaseException] = []

    def drain() -> None:
        try:
            result.update(host.drain())
        except BaseException as exc:  # raised again below, as a drain without the bar would
            failed.append(exc)

    worker = threading.Thread(target=drain, daemon=True)
    try:
        with tqdm(total=queued, unit="msg", desc="file", disable=None) as bar:
            worker.start()
            while worker.is_alive():
                worker.join(0.2)
                bar.n = min(host.mails_mapped, queued)
                bar.refresh()
    finally:
        worker.join()
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    if failed:
        raise failed[0]
    return result


def cmd_explain(args: argparse.Namespace) -> int:
    from ..settings import load_config
    from .explain import run_explain

    path = args.config or os.environ.get("MAILFILER_CONFIG") or REPO / "samples" / "mailfiler.yaml"
    config = load_config(path)
    mailbox = args.mailbox or config.mailboxes[0].name
    if config.mailbox(mailbox) is None:
        names = ", ".join(m.name for m in config.mailboxes)
        print(f"mailbox {mailbox!r} is not in {path} (known: {names})", file=sys.stderr)
        return 1
    return run_explain(args.paths, mailbox, config, args.json)


def cmd_records(args: argparse.Namespace) -> int:
    from ..services.records import RecordError
    from . import records as cli

    if args.records_command == "file-on" and args.source and not args.mailbox:
        print("--source needs --mailbox NAME (the mailbox it came in)", file=sys.stderr)
        return 2
    _prepare_env(args)
    ctx = _context()
    stores, config = ctx.stores, ctx.config
    try:
        if args.records_command == "list":
            if args.mailbox and config.mailbox(args.mailbox) is None:
                names = ", ".join(m.name for m in config.mailboxes)
                print(f"no mailbox {args.mailbox!r} (known: {names})", file=sys.stderr)
                return 1
            rows = cli.list_records(
                stores,
                config,
                status=args.status,
                type_name=args.type,
                mailbox=args.mailbox,
                contact=args.contact,
            )
            cli.print_records(rows, args.json)
            return 0
        if args.records_command == "show":
            record = cli.find_record(stores, config, args.id)
            from ..services.records import representation

            cli.print_record(representation(stores, record), args.json)
            return 0
        if args.records_command == "status":
            row = cli.set_status(stores, config, args.id, args.status, cli.now())
            print(f"{row['id']}: status {row['status']}")
            return 0
        if args.records_command == "reply":
            text = Path(args.body_file).read_text("utf-8") if args.body_file else args.body
            body: dict[str, object] = {"body": text}
            for key in ("to", "cc"):
                if getattr(args, key):
                    body[key] = getattr(args, key)
            if args.subject is not None:
                body["subject"] = args.subject
            record, mail = cli.reply(stores, config, args.id, body, cli.now())
            print(f"{record['id']}: reply to {', '.join(mail.to)} queued ({mail.id})")
        else:  # file-on
            where: dict[str, object] = (
                {"message_id": args.message_id}
                if args.message_id
                else {"mailbox": args.mailbox, "source_id": args.source}
            )
            record, key = cli.file_on(stores, config, args.id, where, cli.now())
            print(f"{record['id']}: message {key} queued to be filed here")
    except RecordError as exc:
        return cli.fail(exc)
    if args.process:
        print(f"processed: {_host(ctx).drain()}")
    else:
        print("the running app sends/files it (`mailfiler run`), or add --process")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit_cmd import cmd_audit as run_audit

    _prepare_env(args)
    ctx = _context()
    return run_audit(ctx.stores, ctx.config, args.record, args.day, args.json)


def cmd_mailboxes(args: argparse.Namespace) -> int:
    from ..services.mailboxes import enable, mailbox_status

    _prepare_env(args)
    ctx = _context()
    if args.mailboxes_command == "enable":
        if ctx.config.mailbox(args.name) is None:
            print(f"no mailbox {args.name!r} in the configuration", file=sys.stderr)
            return 1
        enable(ctx, args.name)
        print(f"{args.name}: polled again from the next timer tick")
        return 0
    for name, status in mailbox_status(ctx).items():
        if args.json:
            print(json.dumps({"name": name, **status}))
        else:
            warned = "; ".join(status.get("warnings") or [])
            why = status.get("disabled_reason") or status.get("error") or warned
            print(f"{name:<24} {status['kind']:<6} {status['status']:<9} {why}"[:200])
            if status.get("fix"):
                print(f"{'':<24} fix: {status['fix']}"[:200])
    return 0


def cmd_auth(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from ..core.config import ImapMailbox
    from ..sources.imap.oauth import ImapAuthError, new_key, sign_in

    if args.auth_command == "new-key":
        print(new_key())
        return 0
    _prepare_env(args)
    ctx = _context()
    mailbox = ctx.config.mailbox(args.mailbox)
    if not isinstance(mailbox, ImapMailbox):
        print(f"no IMAP mailbox {args.mailbox!r} in the configuration", file=sys.stderr)
        return 1
    try:
        account = sign_in(
            mailbox, ctx.stores, datetime.now(UTC), lambda text: print(text, flush=True)
        )
    except ImapAuthError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(
        f"{args.mailbox}: signed in as {account or 'the account above'}; the token cache is "
        "stored encrypted"
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """What `/api/health` says: storage, queues, poison, held mail, and each mailbox."""
    from azure.core.exceptions import AzureError

    from ..services.health import health_report, unreachable_report
    from ..settings import AppSettings
    from ..store.stores import Stores

    _prepare_env(args)
    try:
        report = health_report(_context())
    except AzureError as exc:  # unreachable, or creating the tables and queues failed
        report = unreachable_report(Stores.connect(AppSettings().storage()), exc)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["status"] != "unhealthy" else 1
    storage = report["storage"]
    if not storage.get("reachable"):
        print(f"unhealthy: {storage.get('error')}")
        print("  start the local storage with `make run` (or check AzureWebJobsStorage)")
        return 1
    print(f"status: {report['status']}")
    print("storage: reachable")
    busy = {q: n for q, n in report.get("queues", {}).items() if n}
    print("queues: " + (", ".join(f"{q} {n}" for q, n in sorted(busy.items())) or "all empty"))
    print(f"held: {report.get('held', 0)}")
    for name, entry in report.get("mailboxes", {}).items():
        why = entry.get("disabled_reason") or entry.get("error") or ""
        line = f"  {name:<20} {entry['kind']:<6} {entry['status']:<9}"
        line += f" last success {entry.get('last_success') or '-'}"
        if entry.get("consecutive_failures"):
            line += f", {entry['consecutive_failures']} failures: {why}"
        print(line[:300])
        if entry.get("fix") and (entry.get("consecutive_failures") or entry.get("disabled_reason")):
            print(f"  {'':<20} fix: {entry['fix']}"[:300])
        if entry.get("actions_pending") or entry.get("actions_failed"):
            print(
                f"  {'':<20} after-filing actions: {entry.get('actions_pending', 0)} pending, "
                f"{entry.get('actions_failed', 0)} failed"
            )
        if entry.get("backoff_until"):
            print(f"  {'':<20} server asked for quiet until {entry['backoff_until']}")
        for warning in entry.get("warnings") or []:
            print(f"  {'':<20} warning: {warning}")
        for kind, sub in (entry.get("subscriptions") or {}).items():
            print(f"  {'':<20} subscription {kind}: {sub.get('status')} until {sub.get('expires')}")
        if entry.get("credential_expires"):
            print(f"  {'':<20} certificate valid until {entry['credential_expires']}")
    return 0 if report["status"] != "unhealthy" else 1


def cmd_messages(args: argparse.Namespace) -> int:
    from .operations import cmd_messages_show

    _prepare_env(args)
    if (args.key is None) == (args.source is None):
        print("give a message key or Message-ID, or --source ID (not both)", file=sys.stderr)
        return 2
    if args.source is not None:
        from .operations import cmd_messages_by_source

        ctx = _context()
        if args.mailbox is not None and ctx.config.mailbox(args.mailbox) is None:
            names = ", ".join(m.name for m in ctx.config.mailboxes)
            print(
                f"mailbox {args.mailbox!r} is not in the configuration (known: {names})",
                file=sys.stderr,
            )
            return 1
        mailboxes = [args.mailbox] if args.mailbox else [m.name for m in ctx.config.mailboxes]
        return cmd_messages_by_source(ctx.stores, mailboxes, args.source, args.json)
    return cmd_messages_show(_context().stores, args.key, args.json)


def cmd_poison(args: argparse.Namespace) -> int:
    from .operations import cmd_poison_list, cmd_poison_replay

    _prepare_env(args)
    stores = _context().stores
    if args.poison_command == "list":
        return cmd_poison_list(stores, args.queue, args.json)
    return cmd_poison_replay(stores, args.queue, None if args.all else args.count)


def cmd_events(args: argparse.Namespace) -> int:
    from .events_cmd import cmd_list_dead, cmd_replay

    _prepare_env(args)
    ctx = _context()
    if args.events_command == "dead":
        return cmd_list_dead(ctx.stores, args.json)
    return cmd_replay(ctx.stores, args.id, args.all)


def cmd_run(args: argparse.Namespace) -> int:
    from ..services.serving import Heartbeat
    from .local_http import LocalHttpServer

    _prepare_env(args)
    ctx = _context()
    host = _host(ctx, in_order=not args.batches)
    server = None
    if not args.no_http:
        try:  # before claiming the storage: a taken port leaves it to whoever serves it
            server = LocalHttpServer((args.host, args.port), host, route_prefix="api")
        except OSError as exc:
            print(port_error(args.host, args.port, exc), file=sys.stderr)
            return 1
    if not _claim_storage(ctx, args.force):
        if server:
            server.server_close()
        return REFUSED
    stop = threading.Event()
    lost: list[str] = []

    def on_lost(reason: str) -> None:
        lost.append(reason)
        stop.set()

    heartbeat = Heartbeat(
        ctx.stores, ctx.config, str(ctx.settings.config_path), on_lost, every=_beat_seconds()
    ).start()
    if server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    host.start(
        queues=not args.no_queues,
        timers=not args.no_timers,
        fire_timers_now=not args.no_initial_poll,
    )
    base = f"http://{args.host}:{args.port}"
    routes = [
        f"{base}/api/{fn.trigger.get('route')}"
        for fn in host.of_type("httpTrigger")
        if "{*" not in (fn.trigger.get("route") or "")  # the catch-all answers 404/405
    ]
    print(f"mailfiler: local host running ({len(host.functions)} functions)", flush=True)
    if server:
        # The console answers only on this machine (shared/console/access.py).
        console = f"http://127.0.0.1:{args.port}/api/console/records"
        print(f"mailfiler: console at {console}", flush=True)
    for route in routes if server else []:
        print(f"  {route}", flush=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    heartbeat.stop()
    if lost:
        print(f"mailfiler: stopping: another process took the storage over: {lost[0]}")
    else:
        from azure.core.exceptions import AzureError

        from ..services.serving import release

        with contextlib.suppress(AzureError):  # unreachable storage: the claim expires anyway
            release(ctx.stores, ctx.config, datetime.now(UTC))
    print("mailfiler: stopping", flush=True)
    if server:
        server.shutdown()
        server.server_close()
    host.stop()
    return REFUSED if lost else 0


def port_error(host: str, port: int, exc: OSError) -> str:
    """One line for a port the local host cannot listen on (taken, or not ours to bind)."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"mailfiler: port {port} on {host} is already in use (another `mailfiler run`?): "
            f"stop it, or choose another port: --port {port + 1} (make run PORT={port + 1})"
        )
    return f"mailfiler: cannot listen on {host}:{port}: {exc.strerror or exc}"


def _force_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--force",
        action="store_true",
        help="start even if the storage is serving another configuration (its process is gone "
        "but its claim has not expired yet); a live process with it stops at its next heartbeat",
    )


def _storage_options(cmd: argparse.ArgumentParser) -> None:
    """The options of every command that reads the configuration and the storage."""
    cmd.add_argument("--config", help="configuration file (default: MAILFILER_CONFIG)")
    cmd.add_argument("--settings", help="local.settings.json to read (default: the repo's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailfiler", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("MAILFILER_LOG_LEVEL", "INFO"))
    sub = parser.add_subparsers(dest="command", required=True)

    config = sub.add_parser("config", help="check a configuration file")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate FILE and report every problem")
    check.add_argument("file")
    check.add_argument(
        "--json", action="store_true", help="one JSON object: errors, warnings and notes"
    )
    check.set_defaults(func=cmd_config_check)

    imp = sub.add_parser("import", help="import .eml files, a Maildir or an mbox into a mailbox")
    imp.add_argument("path")
    imp.add_argument("--mailbox", required=True)
    _storage_options(imp)
    imp.add_argument(
        "--process",
        action="store_true",
        help="also run the map and file stages here until the queues are empty",
    )
    imp.add_argument(
        "--batches",
        action="store_true",
        help="with --process: map and file a batch at a time, as Azure does (faster); by "
        "default one message after another in arrival order, numbered as explain numbers them",
    )
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    _force_option(imp)
    imp.set_defaults(func=cmd_import)

    explain = sub.add_parser(
        "explain", help="show what Mailfiler sees in mail and would do with it (writes nothing)"
    )
    explain.add_argument("paths", nargs="+", help=".eml files, folders, Maildirs or mbox files")
    explain.add_argument("--mailbox", help="the mailbox the mail arrives in (default: the first)")
    explain.add_argument(
        "--config",
        help="configuration file (default: MAILFILER_CONFIG, else the sample configuration)",
    )
    explain.add_argument("--json", action="store_true", help="one JSON object per message")
    explain.set_defaults(func=cmd_explain)

    recs = sub.add_parser(
        "records", help="list and show records; reply, set the status, file mail on one"
    )
    recs_sub = recs.add_subparsers(dest="records_command", required=True)
    ident_help = "CASE-12, case-12, or 12 (when one record type has that number)"
    rec_list = recs_sub.add_parser("list", help="records, newest first, with their status")
    rec_list.add_argument("--status", help="only records with this status")
    rec_list.add_argument("--type", help="only records of this record type")
    rec_list.add_argument("--mailbox", help="only records opened by mail to this mailbox")
    rec_list.add_argument("--contact", help="only records of this contact's address")
    rec_show = recs_sub.add_parser("show", help="a record with its timeline and attachments")
    rec_show.add_argument("id", help=ident_help)
    rec_status = recs_sub.add_parser("status", help="set a record's status")
    rec_status.add_argument("id", help=ident_help)
    rec_status.add_argument("status", help="one of the record type's statuses")
    rec_reply = recs_sub.add_parser("reply", help="answer from a record through its mailbox")
    rec_reply.add_argument("id", help=ident_help)
    text = rec_reply.add_mutually_exclusive_group(required=True)
    text.add_argument("--body", help="the reply's text")
    text.add_argument("--body-file", metavar="PATH", help="read the reply's text from a file")
    rec_reply.add_argument("--to", action="append", help="recipient (default: the contact)")
    rec_reply.add_argument("--cc", action="append", help="copy to (repeatable)")
    rec_reply.add_argument("--subject", help="default: Re: the record's title")
    rec_file = recs_sub.add_parser(
        "file-on", help="file a message Mailfiler has seen on this record (and its replies)"
    )
    rec_file.add_argument("id", help=ident_help)
    which_mail = rec_file.add_mutually_exclusive_group(required=True)
    which_mail.add_argument("--message-id", metavar="ID", help="the mail's Message-ID")
    which_mail.add_argument(
        "--source", metavar="ID", help="the mail's id in --mailbox (file name, IMAP UID...)"
    )
    rec_file.add_argument("--mailbox", help="with --source: the mailbox it came in")
    for cmd in (rec_reply, rec_file):
        cmd.add_argument(
            "--process",
            action="store_true",
            help="also run the stages here until the queues are empty",
        )
    for cmd in (rec_list, rec_show):
        cmd.add_argument("--json", action="store_true", help="JSON (one object per line)")
    for cmd in (rec_list, rec_show, rec_status, rec_reply, rec_file):
        _storage_options(cmd)
        cmd.set_defaults(func=cmd_records)

    aud = sub.add_parser("audit", help="who did what: a record's audit trail, or a day's")
    which_trail = aud.add_mutually_exclusive_group(required=True)
    which_trail.add_argument("--record", metavar="ID", help="CASE-3, case-3 or 3")
    which_trail.add_argument("--day", metavar="YYYY-MM-DD", help="every act of that day (UTC)")
    aud.add_argument("--json", action="store_true", help="JSON (one object per line)")
    _storage_options(aud)
    aud.set_defaults(func=cmd_audit)

    boxes = sub.add_parser("mailboxes", help="mailbox status; enable one disabled by failures")
    boxes_sub = boxes.add_subparsers(dest="mailboxes_command", required=True)
    status_cmd = boxes_sub.add_parser("status", help="each mailbox's last poll and errors")
    status_cmd.add_argument("--json", action="store_true", help="JSON (one object per line)")
    enable_cmd = boxes_sub.add_parser("enable", help="poll a mailbox disabled after failures")
    enable_cmd.add_argument("name")
    for cmd in (status_cmd, enable_cmd):
        _storage_options(cmd)
        cmd.set_defaults(func=cmd_mailboxes)

    status = sub.add_parser(
        "status", help="health at a glance: storage, queues, poison, each mailbox and why"
    )
    status.add_argument("--json", action="store_true", help="the /api/health report as JSON")
    _storage_options(status)
    status.set_defaults(func=cmd_status)

    auth = sub.add_parser("auth", help="sign in a delegated IMAP mailbox (device code)")
    auth_sub = auth.add_subparsers(dest="auth_command", required=True)
    auth_imap = auth_sub.add_parser(
        "imap", help="sign in the person behind an IMAP mailbox with oauth.auth: device_code"
    )
    auth_imap.add_argument("--mailbox", required=True, metavar="NAME")
    _storage_options(auth_imap)
    auth_imap.set_defaults(func=cmd_auth)
    auth_key = auth_sub.add_parser(
        "new-key", help="print a new key for MAILFILER_TOKEN_KEY (token caches are encrypted)"
    )
    auth_key.set_defaults(func=cmd_auth)

    msgs = sub.add_parser("messages", help="show a message's filing status and reasons")
    msgs_sub = msgs.add_subparsers(dest="messages_command", required=True)
    show = msgs_sub.add_parser("show", help="where a message was filed and why, or why not")
    show.add_argument(
        "key", nargs="?", help="a message key (hex of the Message-ID) or a Message-ID"
    )
    show.add_argument(
        "--source",
        metavar="ID",
        help="instead of a key: the mail's id in its mailbox (file name, IMAP UID, Graph id), "
        "as `mailfiler messages show` prints it; finds mail without a Message-ID",
    )
    show.add_argument(
        "--mailbox", metavar="NAME", help="with --source: only this mailbox (default: all)"
    )
    show.add_argument("--json", action="store_true", help="one JSON object")
    _storage_options(show)
    show.set_defaults(func=cmd_messages)

    poison = sub.add_parser("poison", help="list poison messages, or replay them after a fix")
    poison_sub = poison.add_subparsers(dest="poison_command", required=True)
    queues_help = "inbound, filing, events or deliveries"
    poison_list = poison_sub.add_parser("list", help="the first 32 messages of QUEUE-poison")
    poison_list.add_argument("queue", metavar="QUEUE", help=queues_help)
    poison_list.add_argument("--json", action="store_true", help="JSON (one object per line)")
    poison_replay = poison_sub.add_parser(
        "replay", help="move messages of QUEUE-poison back to QUEUE"
    )
    poison_replay.add_argument("queue", metavar="QUEUE", help=queues_help)
    which = poison_replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every poison message")
    which.add_argument("--count", type=int, metavar="N", help="at most N poison messages")
    for cmd in (poison_list, poison_replay):
        _storage_options(cmd)
        cmd.set_defaults(func=cmd_poison)

    evs = sub.add_parser("events", help="dead-lettered webhook deliveries, and replaying them")
    evs_sub = evs.add_subparsers(dest="events_command", required=True)
    dead = evs_sub.add_parser("dead", help="list deliveries that failed for good, with the reason")
    dead.add_argument("--json", action="store_true", help="JSON (one object per line)")
    replay = evs_sub.add_parser("replay", help="queue dead deliveries again; the app delivers them")
    replay.add_argument("id", nargs="?", help="an event id (the X-Mailfiler-Delivery header)")
    replay.add_argument("--all", action="store_true", help="every dead delivery")
    for cmd in (dead, replay):
        _storage_options(cmd)
        cmd.set_defaults(func=cmd_events)

    run = sub.add_parser("run", help="host the function app locally (HTTP, timers, queues)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=7071)
    _storage_options(run)
    run.add_argument("--no-http", action="store_true")
    run.add_argument("--no-timers", action="store_true")
    run.add_argument("--no-queues", action="store_true")
    run.add_argument(
        "--batches",
        action="store_true",
        help="map and file queued mail a batch at a time, as Azure does; by default mail is "
        "filed one message after another in arrival order, so records are numbered as "
        "`mailfiler explain` numbers them",
    )
    run.add_argument(
        "--no-initial-poll",
        action="store_true",
        help="wait for the timers' schedules instead of polling at start",
    )
    _force_option(run)
    run.set_defaults(func=cmd_run)
    return parser


def _storage_endpoint() -> str:
    from ..services.health import storage_endpoint
    from ..settings import AppSettings
    from ..store.stores import Stores

    return storage_endpoint(Stores.connect(AppSettings().storage()))


def main(argv: list[str] | None = None) -> int:
    from azure.core.exceptions import AzureError, ServiceRequestError

    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ServiceRequestError:
        # Storage unreachable: where, and how to start it; no traceback.
        print(f"mailfiler: storage unreachable at {_storage_endpoint()}", file=sys.stderr)
        print(
            "  start the local storage with `make run` (or check AzureWebJobsStorage)",
            file=sys.stderr,
        )
        return 2
    except AzureError as exc:
        # Storage refusing: one clear line, not a traceback.
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        print(f"mailfiler: storage error: {type(exc).__name__}: {first_line}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. no storage settings at all
        print(f"mailfiler: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
