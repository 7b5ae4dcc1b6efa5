"""ModelRollouts: one per version's rollout, named from it, and only the newest kept."""

from __future__ import annotations

from aios.api.model_rollout import rollout_name
from aios.workflows.rollout_activities import ROLLOUTS_KEPT, expired


def published(model_deployment: str, version: str, created: str) -> dict:
    return {
        "metadata": {"name": rollout_name(model_deployment, version), "creationTimestamp": created},
        "spec": {"modelDeployment": model_deployment, "version": version},
    }


def test_each_version_has_its_own_dns_name() -> None:
    assert rollout_name("pm25-anomaly", "2024.11.3") == "pm25-anomaly-2024-11-3"
    odd = rollout_name("pm25-anomaly", "1.0+Build_7")
    assert odd != rollout_name("pm25-anomaly", "1.0-build-7")
    assert odd.islower() and "+" not in odd and "_" not in odd
    assert len(rollout_name("m" * 253, "2024.11.3")) <= 253


def test_only_the_newest_rollouts_of_each_model_deployment_are_kept() -> None:
    items = [
        published("pm25", f"1.{n}", f"2026-12-{1 + n // 24:02d}T{n % 24:02d}:00:00Z")
        for n in range(ROLLOUTS_KEPT + 3)
    ]
    items.reverse()  # listed in any order
    items.append(published("no2", "1.0", "2020-01-01T00:00:00Z"))  # another's, older than all
    assert expired(items, "pm25") == [rollout_name("pm25", f"1.{n}") for n in (2, 1, 0)]
    assert expired(items, "no2") == [], "another ModelDeployment's history is its own"
    assert expired(items[:ROLLOUTS_KEPT], "pm25") == [], "nothing beyond the history"
