"""Every way a Graph mailbox authenticates, against the fake Entra ID over HTTPS."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from shared.core.config import GraphMailbox
from shared.services.mailboxes import mailbox_status
from shared.sources.graph.auth import GraphAuthError, provider_for
from shared.sources.graph.client import GraphClient
from shared.stages.polls import poll_all
from tests.fakes.graph import FakeGraph
from tests.fakes.tls import app_certificate

from .graph_setup import APP_SECRET, GraphWorld, graph_world

__all__ = ["graph_world"]
TENANT, APP = "fabrikam-tenant", "app-fabrikam"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGraph]:
    with FakeGraph() as graph:
        for name, value in graph.ca_env().items():
            monkeypatch.setenv(name, value)
        yield graph


def mailbox(fake: FakeGraph, **extra: object) -> GraphMailbox:
    return GraphMailbox.model_validate(
        {
            "name": "box",
            "kind": "graph",
            "user": "ann@fabrikam.example",
            "tenant_id": TENANT,
            "record_type": "case",
            "graph_endpoint": fake.base_url,
            "login_endpoint": fake.login_url,
            **extra,
        }
    )


def self_signed_pem() -> str:
    key_pem, cert_pem, _ = app_certificate()
    return key_pem + cert_pem


def inbox_name(box: GraphMailbox) -> str:
    client = GraphClient(box.graph_endpoint, provider_for(box))
    return str(client.get(f"users/{box.user}/mailFolders/inbox")["displayName"])


def test_certificate_credentials(fake: FakeGraph, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_app(TENANT, APP)
    fake.add_user("ann@fabrikam.example", tenant=TENANT)
    monkeypatch.setenv("FABRIKAM_CERT", self_signed_pem())
    box = mailbox(fake, auth="certificate", client_id=APP, certificate_setting="FABRIKAM_CERT")
    assert inbox_name(box) == "Inbox"
    monkeypatch.setenv("BROKEN_CERT", "-----BEGIN PRIVATE KEY-----\nnope\n")
    broken = mailbox(fake, auth="certificate", client_id=APP, certificate_setting="BROKEN_CERT")
    with pytest.raises(GraphAuthError, match="PEM key and certificate"):
        provider_for(broken)


def test_managed_identity(fake: FakeGraph, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in fake.msi_env().items():
        monkeypatch.setenv(name, value)
    fake.add_user("ann@fabrikam.example")
    box = mailbox(fake, auth="managed_identity")
    assert inbox_name(box) == "Inbox"
    assert fake.requests[-1].tenant == fake.msi_tenant


def test_a_tenant_per_mailbox_and_clear_errors(
    fake: FakeGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_app(TENANT, APP, "right")
    fake.add_app("other-tenant", "app-other", "other")
    fake.add_user("ann@fabrikam.example", tenant=TENANT)
    fake.add_user("bob@other.example", tenant="other-tenant")
    monkeypatch.setenv("RIGHT", "right")
    monkeypatch.setenv("OTHER", "other")
    monkeypatch.setenv("WRONG", "wrong-secret-value")
    ann = mailbox(fake, client_id=APP, client_secret_setting="RIGHT")
    bob = mailbox(
        fake,
        user="bob@other.example",
        tenant_id="other-tenant",
        client_id="app-other",
        client_secret_setting="OTHER",
    )
    assert inbox_name(ann) == inbox_name(bob) == "Inbox"
    assert provider_for(ann) is not provider_for(bob)
    wrong = mailbox(fake, client_id=APP, client_secret_setting="WRONG")
    with pytest.raises(GraphAuthError) as caught:
        provider_for(wrong).token()
    assert "invalid_client" in str(caught.value) and "wrong-secret-value" not in str(caught.value)
    missing = mailbox(fake, client_id=APP, client_secret_setting="NOT_SET_ANYWHERE")
    with pytest.raises(GraphAuthError, match="NOT_SET_ANYWHERE is not set"):
        provider_for(missing)


@pytest.mark.azurite
def test_a_mailbox_that_cannot_authenticate_fails_alone(
    graph_world: GraphWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRAPH_APP_SECRET", "not-" + APP_SECRET)
    graph_world.reconfigure("    polling_only: true\n")
    ctx = graph_world.ctx
    assert poll_all(ctx, dt.datetime.now(dt.UTC))["m365"] == "failed"
    status = mailbox_status(ctx)["m365"]
    assert status["status"] == "failing" and "invalid_client" in str(status["last_error"])
    assert "not-" + APP_SECRET not in str(status["last_error"])
