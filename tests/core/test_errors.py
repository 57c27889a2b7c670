"""One exception root: every exception class defined in `shared` derives from MailfilerError."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import shared
from shared.core.errors import ContractError, MailfilerError

# Exceptions that may not derive from MailfilerError, each with the reason.
# Exceptions that may stay outside the root, with the reason. None today: the Graph webhook's
# internal signal moved with its wiring into shared.stages.graph_notifications, which is loaded
# on the first POST, not when the worker indexes the app.
EXEMPT: dict[str, str] = {}


def shared_modules() -> list[str]:
    found = [
        info.name
        for info in pkgutil.walk_packages(shared.__path__, prefix="shared.")
        if not info.name.endswith(".__main__")  # running it would start the CLI
    ]
    for name in found:
        importlib.import_module(name)
    return found


def exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class a module of `shared` defines (nested ones included)."""
    shared_modules()
    seen: dict[str, type[BaseException]] = {}
    todo: list[type[BaseException]] = [BaseException]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            name = f"{sub.__module__}.{sub.__qualname__}"
            if name not in seen:
                todo.append(sub)
                if sub.__module__.startswith("shared."):
                    seen[name] = sub
    return seen


def test_the_walk_sees_the_modules_and_their_exceptions() -> None:
    from shared.cli.local_http import _TooLarge
    from shared.core.config import ConfigError
    from shared.services.records import RecordError
    from shared.sources.graph.client import GraphThrottled
    from shared.store.errors import StorageLimitError

    modules = set(shared_modules())
    assert {"shared.core.decide", "shared.functions.api", "shared.cli.main"} <= modules
    found = set(exception_classes().values())
    # One per layer: if the walk misses a layer, this fails before the check below passes idly.
    layers = {ContractError, ConfigError, StorageLimitError, GraphThrottled, RecordError, _TooLarge}
    assert layers <= found, layers - found


def test_every_exception_of_shared_derives_from_mailfiler_error() -> None:
    strays = sorted(
        name
        for name, cls in exception_classes().items()
        if not issubclass(cls, MailfilerError) and name not in EXEMPT
    )
    assert strays == [], f"derive these from shared.core.errors.MailfilerError: {strays}"


def test_mailfiler_error_sits_just_above_exception_in_every_mro() -> None:
    # The builtin base comes first (`class X(ValueError, MailfilerError)`): the root then only
    # adds itself above Exception, and super() in a class of two families (GraphThrottled is a
    # GraphError and a SourceBusy) still reaches the __init__ it reached before.
    tail = (MailfilerError, Exception, BaseException, object)
    wrong = sorted(
        name
        for name, cls in exception_classes().items()
        if name not in EXEMPT and cls.__mro__[-4:] != tail
    )
    assert wrong == [], f"put the builtin base first, MailfilerError last: {wrong}"


def test_a_class_of_two_families_initialises_as_before() -> None:
    from shared.sources.base import SourceBusy
    from shared.sources.graph.client import GraphError, GraphThrottled

    exc = GraphThrottled(7.0, "fetch", status=503)
    assert isinstance(exc, GraphError) and isinstance(exc, SourceBusy)
    assert (exc.status, exc.retry_after, exc.code) == (503, 7.0, "throttled")


def test_exempt_names_still_exist() -> None:
    # An exemption outliving its class would hide the next class of that name.
    assert set(EXEMPT) <= set(exception_classes())


def test_errors_keep_the_builtin_base_callers_catch() -> None:
    from shared.core.config import ConfigError
    from shared.sources.graph.client import GraphError
    from shared.sources.imap.source import ImapError
    from shared.store.errors import StorageLimitError
    from shared.store.leases import SlotsBusy

    assert issubclass(ContractError, ValueError)
    assert issubclass(StorageLimitError, ValueError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ImapError, OSError)
    assert issubclass(SlotsBusy, TimeoutError)
    assert issubclass(GraphError, RuntimeError)


def test_contract_error_is_one_class_wherever_it_is_imported_from() -> None:
    from shared.store import errors

    assert errors.ContractError is ContractError
    with pytest.raises(MailfilerError, match="not a valid"):
        raise errors.ContractError("not a valid InboundMessage")
