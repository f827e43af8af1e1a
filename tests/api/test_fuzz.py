"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis).

Every operation gets up to ``EXAMPLES`` generated requests (valid and invalid parameters
and bodies) with an admin key, on SQLite and PostgreSQL: no response may be a 5xx, and
every documented response must match its schema. Requests go through the FastAPI test
client (schemathesis' own ``requests`` transport trips over the ``urllib3-future`` package
this environment has). Deterministic (derandomized) and
bounded; the cases run and failures found are printed in the test summary.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.api.conftest import Api

EXAMPLES = 20


def _httpx_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """schemathesis prepares ``requests``-style arguments; the test client speaks httpx.

    The API reads no cookies, so none are sent (httpx deprecates per-request cookies).
    """
    out = {k: v for k, v in kwargs.items() if k in ("method", "url", "headers", "params", "json")}
    data = kwargs.get("data")
    if isinstance(data, (bytes, str)):
        out["content"] = data
    elif data is not None:
        out["data"] = data
    return out


def _fuzzer(operation, label: str, headers: dict[str, str], cases: dict[str, int], client):
    # Both valid requests and invalid ones (wrong types, out-of-range values, bad bodies).
    @given(case=st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE)))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        cases[label] += 1
        response = client.request(**_httpx_kwargs(case.as_transport_kwargs(headers=headers)))
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    return fuzz


def test_no_server_errors_from_generated_requests(api: Api, request) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    headers = api.headers("admin")
    cases: dict[str, int] = {}
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        cases[label] = 0
        try:
            _fuzzer(operation, label, headers, cases, api.client)()
        except Exception as exc:  # one operation's failure must not hide the others'
            failures[label] = f"{type(exc).__name__}: {str(exc)[:2000]}"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"\nschemathesis [{api.storage.dialect}]: {sum(cases.values())} cases over "
            f"{len(cases)} operations, {len(failures)} failing operation(s)"
        )
    assert len(cases) == 16  # with GET /v1/models/shadow and the two retrain-run routes
    assert failures == {}
