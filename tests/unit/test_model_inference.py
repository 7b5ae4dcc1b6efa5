"""The pure parts of the inference connector: traffic routing and error classification."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from aios.connectors.inference import (
    InferenceRejected,
    InferenceUnavailable,
    authority,
    classify,
    route,
)


def target(version: str, host: str) -> dict[str, str]:
    return {
        "version": version,
        "model": "pm25-anomaly",
        "http": f"http://{host}.city.svc:8000",
        "grpc": f"{host}.city.svc:8001",
    }


STATUS = {
    "stable": target("1", "pm25-anomaly"),
    "canary": target("2", "pm25-anomaly-canary"),
    "canaryWeight": 25,
}


def test_the_canary_gets_its_weight_of_the_draws() -> None:
    draws = [i / 1000 for i in range(1000)]
    versions = [route(STATUS, d).primary.version for d in draws]
    assert versions.count("2") == 250
    assert route(STATUS, 0.0).primary.role == "canary"
    assert route(STATUS, 0.25).primary.role == "stable"
    assert route(STATUS, 0.999).primary.url("grpc") == "pm25-anomaly.city.svc:8001"


def test_no_canary_or_zero_weight_means_the_stable_version_answers() -> None:
    assert route({**STATUS, "canaryWeight": 0}, 0.0).primary.version == "1"
    assert route({"stable": STATUS["stable"], "canaryWeight": 50}, 0.0).primary.version == "1"
    full = route({**STATUS, "canaryWeight": 100}, 0.999)
    assert full.primary.version == "2" and full.primary.url("http").endswith(
        "-canary.city.svc:8000"
    )


def test_a_shadow_gets_a_mirror_and_never_answers() -> None:
    status = {"stable": target("1", "a"), "shadow": target("2", "a-shadow"), "canaryWeight": 0}
    for draw in (0.0, 0.5, 0.99):
        chosen = route(status, draw)
        assert chosen.primary.version == "1"
        assert chosen.mirror is not None and chosen.mirror.version == "2"
        assert chosen.mirror.role == "shadow"
        assert chosen.candidate == chosen.mirror
    assert route(STATUS, 0.5).mirror is None and route(STATUS, 0.5).candidate is None


def test_the_stable_version_gets_a_copy_of_what_the_canary_answers() -> None:
    canary = route(STATUS, 0.0)
    assert canary.primary.role == "canary" and canary.candidate == canary.primary
    assert canary.mirror is not None and canary.mirror.version == "1"


def test_nothing_serving_is_unavailable_so_callers_fall_back() -> None:
    with pytest.raises(InferenceUnavailable, match="serves no version"):
        route({}, 0.5)
    with pytest.raises(InferenceUnavailable):
        route({"stable": {"version": "1", "model": "m", "http": None, "grpc": None}}, 0.5)


@pytest.mark.parametrize(
    ("status", "protocol", "kind"),
    [
        ("500", "http", InferenceUnavailable),
        ("503", "http", InferenceUnavailable),
        ("404", "http", InferenceUnavailable),
        ("400", "http", InferenceRejected),
        ("StatusCode.UNAVAILABLE", "grpc", InferenceUnavailable),
        ("StatusCode.INTERNAL", "grpc", InferenceUnavailable),
        ("StatusCode.DEADLINE_EXCEEDED", "grpc", InferenceUnavailable),
        ("StatusCode.INVALID_ARGUMENT", "grpc", InferenceRejected),
    ],
)
def test_server_errors_are_classified(status: str, protocol, kind: type) -> None:
    error = classify(InferenceServerException("boom", status=status), protocol, "m at u")
    assert type(error) is kind
    assert "m at u" in str(error) and "boom" in str(error)


def test_authority_strips_scheme_and_path() -> None:
    assert authority("http://10.244.1.3:8000/v2") == "10.244.1.3:8000"
    assert authority("m.ns.svc:8001") == "m.ns.svc:8001"


def test_a_candidate_that_does_not_answer_yet_gets_nothing() -> None:
    loading = {**STATUS, "canary": {**STATUS["canary"], "ready": False}, "canaryWeight": 100}
    assert route(loading, 0.0).primary.role == "stable"
    shadow = {
        "stable": {**STATUS["stable"], "ready": False},
        "shadow": {**target("2", "s"), "ready": False},
    }
    chosen = route(shadow, 0.0)
    assert chosen.mirror is None
    assert chosen.primary.role == "stable", "the stable is tried even when it looked down"
