"""Schemathesis against the gateway's own OpenAPI document: no 5xx, no response that breaks the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis")


def test_inference_endpoints_never_5xx(make_gateway: Any, tmp_path: Path) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    from bastion.guard import create_app

    gw = make_gateway(f"sqlite:///{tmp_path / 'f.db'}")
    key, _ = gw.keys.create("fuzzer", ["infer"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(gw))
    ops = {op.ok().path: op.ok() for op in schema.get_all_operations()}
    seen: list[int] = []

    for path in ("/v2/models/{name}/infer", "/v2/models/{name}"):
        op = ops[path]

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            case.headers = {**(case.headers or {}), "X-API-Key": key}
            if len(seen) % 2 == 0:
                case.path_parameters = {**(case.path_parameters or {}), "name": "digits"}  # reach the model too
            response = case.call()
            seen.append(response.status_code)
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                     response_schema_conformance])

        run()
    assert len(seen) >= 60 and all(code < 500 for code in seen)
    assert {400, 422} & set(seen) and 404 in seen
