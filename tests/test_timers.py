"""The timers, declared through one helper (functions/stage.py `timer`) as the queue stages are
through `stage`: each keeps its name (the admin API and the logs call it so), its schedule and
its binding, loads the app, runs with the context and says when a tick came late."""

from __future__ import annotations

import logging

import pytest

from shared.services.context import AppContext
from shared.store.stores import POLLS

from .helpers import app_functions, local_host

# As the blueprints declared them before the helper (read from the app then, written here).
TIMERS = {
    "poll_mailboxes": "0 */1 * * * *",
    "apply_retention": "0 15 3 * * *",
    "health_snapshot": "0 */5 * * * *",
    "graph_subscriptions": "0 7,37 * * * *",
}


def test_every_timer_keeps_its_name_schedule_and_binding() -> None:
    timers = [f for f in app_functions() if f.trigger["type"] == "timerTrigger"]
    assert {f.name: f.trigger["schedule"] for f in timers} == TIMERS
    for fn in timers:
        assert (fn.trigger["name"], fn.trigger["runOnStartup"]) == ("timer", False), fn.name
        assert fn.call.__name__ == fn.name and fn.call.__doc__, fn.name


@pytest.mark.azurite
def test_a_late_tick_runs_the_timer_with_the_context_and_says_so(
    context: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    enabled = [m.name for m in context.config.mailboxes if m.enabled]
    assert enabled  # the sample configuration polls something
    host = local_host(context.stores.queues)
    (poll,) = [f for f in host.functions if f.name == "poll_mailboxes"]
    with caplog.at_level(logging.INFO):
        host.fire_timer(poll, past_due=True)
    assert context.stores.queues.depth(POLLS) == len(enabled)  # one poll per mailbox due
    said = [r.getMessage() for r in caplog.records]
    assert "poll_mailboxes: timer is past due; running now" in said
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], said
    caplog.clear()
    with caplog.at_level(logging.INFO):
        host.fire_timer(poll)  # on time: nothing to say about it
    assert not [m for m in (r.getMessage() for r in caplog.records) if "past due" in m]
