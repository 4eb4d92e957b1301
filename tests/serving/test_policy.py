from __future__ import annotations

from collections import Counter

import pytest

from shipyard.errors import ConcurrentChangeError, ModelNotFoundError, ParameterError
from shipyard.serving.policy import (
    Arm,
    Router,
    TrafficPolicy,
    get_policy,
    policy_history,
    rollback_policy,
    set_policy,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    """Every test here runs on SQLite and on PostgreSQL (the test id says which)."""
    return str(request.param)


@pytest.fixture(scope="module")
def policy_workspace(request: pytest.FixtureRequest, database: str) -> tuple[object, object]:
    """fraud v1 and v2 registered, on ``database``."""
    if database == "postgresql":
        return request.getfixturevalue("postgres_serving_workspace")  # type: ignore[no-any-return]
    return request.getfixturevalue("serving_workspace")  # type: ignore[no-any-return]


def _policy(*arms: tuple[int, float], sticky: str | None = None) -> TrafficPolicy:
    return TrafficPolicy("fraud", "fraud", tuple(Arm(v, w) for v, w in arms), sticky_key=sticky)


def test_weighted_split_follows_the_weights() -> None:
    router = Router(_policy((1, 90), (2, 10)))
    counts = Counter(router.choose(None) for _ in range(20_000))
    assert 0.08 < counts[2] / 20_000 < 0.12


def test_sticky_keys_stay_in_one_arm_and_spread_over_both() -> None:
    router = Router(_policy((1, 50), (2, 50), sticky="customer"))
    chosen = {f"customer-{i}": router.choose(f"customer-{i}") for i in range(2000)}
    again = Router(_policy((1, 50), (2, 50), sticky="customer"))  # another worker, same answer
    assert all(again.choose(k) == v for k, v in chosen.items())
    share = Counter(chosen.values())[2] / 2000
    assert 0.45 < share < 0.55


def test_a_salt_reshuffles_assignment_and_stays_stable() -> None:
    def salted(salt: str | None) -> Router:
        policy = _policy((1, 50), (2, 50), sticky="customer")
        return Router(TrafficPolicy(**{**policy.__dict__, "salt": salt}))

    keys = [f"customer-{i}" for i in range(2000)]
    plain = [salted(None).choose(k) for k in keys]
    first = [salted("exp-1").choose(k) for k in keys]
    assert first == [salted("exp-1").choose(k) for k in keys]  # stable for one salt
    second = [salted("exp-2").choose(k) for k in keys]
    # independent salts: about half the customers change arm between experiments
    moved = sum(a != b for a, b in zip(first, second, strict=True)) / len(keys)
    assert 0.4 < moved < 0.6
    assert sum(a != b for a, b in zip(plain, first, strict=True)) / len(keys) > 0.4


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (_policy(), "needs at least one arm"),
        (_policy((1, 0), (2, 0)), "must be >= 0 and not all 0"),
        (_policy((1, 1), (1, 2)), "names a version twice"),
    ],
)
def test_invalid_policies_are_named(policy: TrafficPolicy, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        policy.validate()


def test_describe() -> None:
    policy = TrafficPolicy(
        "fraud", "fraud", (Arm(1, 9), Arm(2, 1)), shadows=(3,), sticky_key="customer"
    )
    assert policy.describe() == "v1 90% · v2 10% · shadow v3 · sticky on customer"


def test_policies_are_stored_as_revisions_and_roll_back(
    policy_workspace: tuple[object, object],
) -> None:
    ws = policy_workspace[0]
    first = set_policy(ws, _policy((1, 1)), reason="start", actor="a")  # type: ignore[arg-type]
    second = set_policy(ws, _policy((1, 80), (2, 20)), reason="canary", actor="b")  # type: ignore[arg-type]
    assert second.revision == first.revision + 1
    restored = rollback_policy(ws, "fraud", reason="too many alerts", actor="c")  # type: ignore[arg-type]
    assert restored.arms == first.arms and restored.revision == second.revision + 1
    assert "rollback to revision" in get_policy(ws, "fraud").reason  # type: ignore[arg-type]
    assert [p.actor for p in policy_history(ws, "fraud")][-3:] == ["a", "b", "c"]  # type: ignore[arg-type]
    with pytest.raises(ModelNotFoundError, match=r"version 99"):
        set_policy(ws, _policy((99, 1)), reason="typo")  # type: ignore[arg-type]


def test_a_rollback_expecting_a_revision_happens_once(
    policy_workspace: tuple[object, object],
) -> None:
    ws = policy_workspace[0]
    good = set_policy(ws, _policy((1, 1)), reason="start")  # type: ignore[arg-type]
    bad = set_policy(ws, _policy((2, 1)), reason="deploy v2")  # type: ignore[arg-type]
    restored = rollback_policy(ws, "fraud", reason="guardrail", expected_revision=bad.revision)  # type: ignore[arg-type]
    assert restored.arms == good.arms
    # a second worker that saw the same trip finds the policy moved on: nothing written
    with pytest.raises(ConcurrentChangeError, match=f"revision {restored.revision}"):
        rollback_policy(ws, "fraud", reason="guardrail", expected_revision=bad.revision)  # type: ignore[arg-type]
    assert get_policy(ws, "fraud").revision == restored.revision  # type: ignore[arg-type]
    assert get_policy(ws, "fraud").salt is None  # type: ignore[arg-type]


def test_rolling_back_a_rollback_goes_further_back_never_to_the_version_it_undid(
    policy_workspace: tuple[object, object],
) -> None:
    ws = policy_workspace[0]
    old = set_policy(ws, _policy((1, 1)), reason="v1")  # type: ignore[arg-type]
    good = set_policy(ws, _policy((2, 1)), reason="deploy v2")  # type: ignore[arg-type]
    bad = set_policy(ws, _policy((1, 50), (2, 50)), reason="split")  # type: ignore[arg-type]
    automatic = rollback_policy(ws, "fraud", reason="guardrail", expected_revision=bad.revision)  # type: ignore[arg-type]
    assert automatic.arms == good.arms and automatic.reason.startswith(
        f"rollback to revision {good.revision}:"
    )
    by_hand = rollback_policy(ws, "fraud", reason="operator")  # type: ignore[arg-type]
    assert by_hand.arms == old.arms  # before the restored revision, not the split it undid
    assert by_hand.reason.startswith(f"rollback to revision {old.revision}:")
    set_policy(ws, _policy((1, 1)), reason="reset")  # type: ignore[arg-type]


def test_without_a_sticky_key_the_routing_header_is_ignored_and_assignment_is_random() -> None:
    router = Router(_policy((1, 50), (2, 50)))
    key = router.routing_key({b"x-routing-key": b"customer-1"}, {"routing_key": "customer-1"})
    assert key is None
    assert set(Counter(router.choose(key) for _ in range(200))) == {1, 2}


@pytest.mark.parametrize(
    ("headers", "parameters"),
    [
        ({b"x-routing-key": b"c-7"}, None),
        ({b"customer": b"c-7"}, None),  # the header named by the sticky key (any case)
        ({}, {"routing_key": "c-7"}),  # V2 request parameters
        ({}, {"Customer": "c-7"}),  # parameters keep the exact name
    ],
)
def test_with_a_sticky_key_the_routing_key_comes_from_headers_or_v2_parameters(
    headers: dict[bytes, bytes], parameters: dict[str, object] | None
) -> None:
    router = Router(_policy((1, 50), (2, 50), sticky="Customer"))
    assert router.routing_key(headers, parameters) == "c-7"
    assert router.routing_key({}, None) is None  # no key: random


def test_arms_with_different_inputs_are_refused_naming_versions_and_difference() -> None:
    from shipyard.errors import SchemaError
    from shipyard.serving.policy import check_same_inputs
    from shipyard.types import ColumnSpec, Schema

    base = Schema((ColumnSpec("amount", "float"), ColumnSpec("night", "int")))
    policy = _policy((1, 50), (2, 50))
    check_same_inputs(policy, {1: base, 2: Schema(base.columns)})
    fewer = Schema((*base.columns[:1], ColumnSpec("risk", "float")))
    with pytest.raises(SchemaError, match=r"v1 and v2 take different inputs \(v2 lacks "):
        check_same_inputs(policy, {1: base, 2: fewer})
    swapped = Schema(base.columns[::-1])
    with pytest.raises(SchemaError, match="different order"):
        check_same_inputs(policy, {1: base, 2: swapped})
    retyped = Schema((ColumnSpec("amount", "float"), ColumnSpec("night", "float")))
    with pytest.raises(SchemaError, match="'night' is int in v1 and float in v3"):
        check_same_inputs(policy, {1: base, 3: retyped})
