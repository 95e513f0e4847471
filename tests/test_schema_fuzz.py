"""Bad input at scale: schemathesis generates requests from the OpenAPI schema (valid and
invalid ones) and sends them with real keys to the running app. No answer may be a 5xx, and a
request that is refused (4xx) may not have written a row."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import psycopg
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import Api
from tests.helpers import row_counts

# Examples per operation and mode; FUZZ_EXAMPLES raises it for a longer local run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


class Fuzz:
    def __init__(self, api: Api, db: psycopg.Connection[Any], keys: list[str]) -> None:
        self.api, self.db, self.keys = api, db, keys
        self.problems: list[str] = []
        self.sent = 0
        self.refused = 0

    def checker(self, operation: Any, mode: GenerationMode) -> Callable[[], None]:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode), key=st.sampled_from(self.keys))
        def check(case: Any, key: str) -> None:
            before = row_counts(self.db)
            headers = {"Authorization": f"Bearer {key}"}
            response = case.call(base_url=self.api.url, headers=headers, timeout=30)
            self.sent += 1
            label = f"{case.method} {case.formatted_path} ({mode.value})"
            if response.status_code >= 500:
                self.problems.append(f"{label}: {response.status_code} {response.text[:300]}")
            elif response.status_code >= 400:
                self.refused += 1
                after = row_counts(self.db)
                if after != before:
                    changed = {t: (before[t], after[t]) for t in after if after[t] != before[t]}
                    self.problems.append(f"{label}: {response.status_code} wrote {changed}")

        return check


def test_generated_requests_get_no_5xx_and_refusals_write_nothing(
    api: Api, new_key: Any, db: psycopg.Connection[Any]
) -> None:
    fuzz = Fuzz(api, db, [new_key("fuzz_agent"), new_key("fuzz_ops", admin=True)])
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, "every route is in the schema"
    for operation in operations:
        for mode in GenerationMode:
            try:
                fuzz.checker(operation, mode)()
            except Unsatisfiable:  # no invalid request exists (e.g. GET /healthz)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert fuzz.problems == [], "\n".join(fuzz.problems[:20])
    assert fuzz.refused > fuzz.sent // 4, f"refused {fuzz.refused} of {fuzz.sent}"
