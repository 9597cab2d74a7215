"""The ingest and report HTTP APIs fuzzed from their own OpenAPI documents (schemathesis): valid
and invalid requests for every operation, with the admin token so the handlers are reached (a
negative case may leave the token out, every operation declaring the bearer scheme: that one, and
only that one, is a 401); none may answer 5xx. Bounded: 30 examples per operation and mode, a fixed
derandomized seed, a time cap.

(In tests/security rather than tests/faults so it runs last on the shared stack: its thousands of
unknown record ids are dead letters the other tests' counts need not see.)"""

from __future__ import annotations

import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.faults.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

EXAMPLES = 30
BUDGET_S = 90.0  # per API


@pytest.mark.parametrize("api", ["ingest", "report"])
def test_fuzzed_requests_never_get_a_5xx(world: World, api: str) -> None:
    base = world.ingest if api == "ingest" else world.report
    schema = schemathesis.openapi.from_dict(httpx.get(f"{base}/openapi.json", timeout=30).json())
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert operations
    started = time.monotonic()
    server_errors: list[str] = []
    wrong_auth: list[str] = []
    calls = 0

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=st.data())
            @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case: st.DataObject) -> None:
                nonlocal calls
                if time.monotonic() - started > BUDGET_S:
                    return
                drawn = case.draw(operation.as_strategy(generation_mode=mode))  # noqa: B023 (runs in this loop)
                response = drawn.call(base_url=base, headers=world.auth, timeout=20)
                calls += 1
                # The token goes with every request, but a negative case may drop it (the operation
                # declares the bearer scheme): then, and only then, a 401.
                sent = response.request.headers.get("authorization") is not None
                if (response.status_code == 401) == sent:
                    wrong_auth.append(f"{drawn.method} {drawn.formatted_path} token sent: {sent} "
                                      f"-> {response.status_code}")
                if response.status_code >= 500:
                    server_errors.append(f"{drawn.method} {drawn.formatted_path} {drawn.query} {drawn.body!r:.300}"
                                         f" -> {response.status_code} {response.text[:300]}")

            try:
                run()
            except Unsatisfiable:
                # An operation whose every parameter is optional and free-form has no invalid request.
                if mode is GenerationMode.POSITIVE:
                    raise
    assert not server_errors, "\n".join(server_errors[:20])
    assert not wrong_auth, wrong_auth[:20]  # with the token the handlers were reached; without it, a 401
    assert calls >= len(operations) * EXAMPLES, calls  # the bound cut nothing short of the minimum
    world.assert_alive()
    assert set(world.health().values()) == {200}
