"""schemathesis against /api/openapi.json on the local host: no request may end in a 5xx, and
every answer must be one the document promises (status code, content type, body schema,
headers), with schema-valid requests accepted and schema-invalid ones refused.

Bounded and repeatable: a fixed number of examples per operation and mode, derandomized
(Hypothesis draws the same cases on every run), no example database.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import PositiveDataAcceptanceConfig
from schemathesis.errors import FailureGroup
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)
from schemathesis.generation.overrides import Override
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.services.context import AppContext
from shared.stages.polls import poll_all

from .helpers import local_host
from .serving import serve_api

pytestmark = pytest.mark.azurite
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
EXAMPLES = 25  # per operation and mode: 7 operations x 2 modes, about a minute here
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    positive_data_acceptance,
    negative_data_rejection,
]
# Schema-valid requests the API may still refuse, each for a reason the document states: the
# record or message does not exist (404), the record changed (409) or its If-Match does not
# hold (412), or the record type refuses the value (422: a status or field it does not have).
ACCEPTABLE = ["2xx", "404", "409", "412", "422"]

# A record and a message the sample mail creates.
EXISTING = {"type": "case", "id": "CASE-1", "key": "<a1b2c3@mx.example.de>"}


@pytest.fixture
def api_schema(context: AppContext) -> Iterator[Any]:
    poll_all(context, NOW)
    host = local_host(context.stores.queues)
    host.drain()
    with serve_api(host) as served:
        schema = schemathesis.openapi.from_url(f"{served.base}/openapi.json")
        schema.config.update(base_url=served.base)
        schema.config.checks.positive_data_acceptance = PositiveDataAcceptanceConfig(
            expected_statuses=ACCEPTABLE
        )
        # Refusals of schema-invalid requests: schemathesis' own list, and 413 (a string over
        # its maxLength can make the body larger than the 64 KiB the API reads).
        refusals = schema.config.checks.negative_data_rejection
        refusals.expected_statuses = [*refusals.expected_statuses, "413"]
        yield schema


def fuzz(
    operation: Any,
    mode: HypothesisTestMode,
    path: dict[str, str],
    checks: list[Any],
    failures: list[str],
) -> int:
    """Run one schemathesis phase (coverage: the schema's boundaries, each once; fuzzing:
    EXAMPLES random cases) on one operation, valid and invalid data alike, as the CLI does,
    with the path parameters in `path` fixed; every failure is listed in `failures`. Returns
    the number of requests made."""
    calls = 0

    def run(case: Any) -> None:
        nonlocal calls
        positive = case.meta.generation.mode is GenerationMode.POSITIVE
        if positive and case.query:
            # The continuation token is opaque: only one we handed out is valid, and a made-up
            # one is a 400 (test_api checks that); a schema cannot say so.
            case.query.pop("continuation", None)
        calls += 1
        where = f"{case.meta.generation.mode.value} {case.method} {case.formatted_path}"
        try:
            case.call_and_validate(checks=checks)
        except FailureGroup as group:
            failures.extend(f"{where}: {f.title}: {f.message[:300]}" for f in group.exceptions)
        except AssertionError as failure:
            failures.append(f"{where}: {str(failure)[:300]}")

    test = create_test(
        operation=operation,
        test_func=run,
        config=HypothesisTestConfig(
            project=operation.schema.config,
            modes=[mode],
            settings=settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # a failure is listed, not shrunk
                suppress_health_check=list(HealthCheck),
            ),
            # The key the document asks for: the local host checks none (as Core Tools), so a
            # request without it proves nothing here; in Azure the Functions host answers 401.
            override=Override(headers={"x-functions-key": "local"}, path_parameters=path),
        ),
    )
    # Unsatisfiable: nothing in the request can be made invalid without changing the route (a
    # path parameter's only invalid value is "", which is another URL): no negative cases.
    with contextlib.suppress(Unsatisfiable):
        test()
    return calls


def test_fuzzing_finds_no_server_error_and_no_schema_mismatch(api_schema: Any) -> None:
    """Every operation, with generated valid and invalid inputs, through every check above."""
    failures: list[str] = []
    calls: dict[str, int] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        checks = CHECKS
        # Made-up paths name no record or message, so the API answers 404 before it reads a
        # body: each operation also runs on a record and a message that exist.
        real = {k: v for k, v in EXISTING.items() if f"{{{k}}}" in operation.path}
        runs = [(HypothesisTestMode.COVERAGE, real), (HypothesisTestMode.FUZZING, real)]
        if real:
            runs.append((HypothesisTestMode.FUZZING, {}))
        for mode, path in runs:
            key = f"{mode.value} {operation.method.upper()} {operation.path} {sorted(path)}"
            calls[key] = fuzz(operation, mode, path, checks, failures)
    assert failures == [], "\n".join(sorted(set(failures)))
    # Every run made requests: the checks above had something to check.
    # (A GET of one fixed record has nothing left to vary: one request.)
    assert len(calls) == 27 and all(calls.values()) and sum(calls.values()) >= 300, calls
