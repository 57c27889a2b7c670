"""A Graph mailbox's failures in plain words with the setting to fix, against the fake Graph
over real HTTP: a refused secret (401), no access to the mailbox (403), no such mailbox (404)
(issue 21 point 3)."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from shared.services.context import AppContext, set_context
from shared.services.mailboxes import mailbox_status
from shared.settings import load_config
from shared.stages.polls import poll_all

from .graph_setup import APP_SECRET, USER, GraphWorld, graph_world

__all__ = ["graph_world"]  # the fixture, used by name
pytestmark = pytest.mark.azurite


def poll_as(world: GraphWorld, user: str) -> dict[str, str | None]:
    """Poll the mailbox configured for `user`; its stored error and fix."""
    text = re.sub(r"(?m)^    user: .*$", f"    user: {user}", world.config_file.read_text())
    world.config_file.write_text(text)
    ctx = AppContext(
        world.ctx.settings,
        load_config(world.config_file),
        world.config_file.parent,
        world.ctx.stores,
    )
    set_context(ctx)
    ctx_config = ctx.config.mailbox("m365")
    assert ctx_config is not None and getattr(ctx_config, "user", None) == user
    world.ctx = ctx
    assert poll_all(ctx, dt.datetime.now(dt.UTC))["m365"] == "failed"
    status = mailbox_status(ctx)["m365"]
    return {"error": status["error"], "fix": status["fix"]}


def test_a_refused_secret_names_its_setting(
    graph_world: GraphWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRAPH_APP_SECRET", "not-" + APP_SECRET)
    graph_world.reconfigure("    polling_only: true\n")
    assert poll_all(graph_world.ctx, dt.datetime.now(dt.UTC))["m365"] == "failed"
    status = mailbox_status(graph_world.ctx)["m365"]
    assert str(status["error"]).startswith(
        f"Microsoft Entra ID refused the app's sign-in for {USER}: "
    )
    assert "invalid_client" in str(status["error"])
    assert status["fix"] == (
        "check app setting GRAPH_APP_SECRET (a client secret expires), mailboxes.m365.client_id "
        "and mailboxes.m365.tenant_id"
    )
    assert "not-" + APP_SECRET not in str(status)


def test_a_mailbox_out_of_reach_or_unknown_says_which(graph_world: GraphWorld) -> None:
    graph_world.reconfigure("    polling_only: true\n")
    elsewhere = "архив@other.example"
    graph_world.fake.add_user(elsewhere, tenant="another-tenant")  # not our app's to open
    assert poll_as(graph_world, elsewhere) == {
        "error": f"Graph denied the app access to {elsewhere} (403): admin consent or "
        "mailbox scope",
        "fix": "grant the Entra app the application permission Mail.ReadWrite with admin "
        f"consent, and include {elsewhere} in its Exchange RBAC scope",
    }
    nobody = "nobody@fabrikam.example"
    assert poll_as(graph_world, nobody) == {
        "error": f"Graph has no mailbox {nobody} (404)",
        "fix": "check mailboxes.m365.user (the mailbox's address or object id) and "
        "mailboxes.m365.tenant_id",
    }
