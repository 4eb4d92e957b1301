"""``shipyard audit``: the registry's and serving's changes in one trail, listed and verified."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from shipyard.data.catalog import write_dataset
from shipyard.errors import PromotionRefusedError
from shipyard.features.offline import OfflineStore
from shipyard.governance.audit import record_threshold_change
from shipyard.monitoring.logstore import parquet_folder
from shipyard.registry import ModelRegistry, PromotionGate
from shipyard.serving.policy import Arm, TrafficPolicy, rollback_policy, set_policy
from shipyard.serving.predlog import log_folder
from shipyard.workspace import Workspace
from tests.monitoring.test_logstore import _write as write_segments
from tests.registry.credit import DATASET, VIEWS, applications
from tests.registry.test_second_solution import _register

ENDPOINT = "credit-api"


def shipyard(ws: Workspace, *args: str) -> Result:
    """Run ``shipyard ARGS`` on the workspace, as from the shell."""
    from shipyard.cli.main import cli

    return CliRunner().invoke(cli, ["--workspace", str(ws.root), *args], env={"COLUMNS": "250"})


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """Two credit versions through registration, a gate refusal, an override, a rollback,
    two traffic policies and a policy rollback, and a threshold change."""
    ws = Workspace.init(tmp_path_factory.mktemp("audit") / "ws")
    dataset = write_dataset(
        ws, DATASET, applications(), time_column="application_date", label_column="default"
    )
    OfflineStore(ws).materialize(VIEWS)
    registry = ModelRegistry(ws)
    strong, _ = _register(ws, dataset, "logistic_regression")
    weak, _ = _register(ws, dataset, "decision_tree", max_depth=1)
    registry.promote(DATASET, strong.version, reason="first credit model", actor="carol")
    with pytest.raises(PromotionRefusedError):
        registry.promote(DATASET, weak.version, reason="try", gate=PromotionGate(n_boot=200))
    registry.promote(DATASET, weak.version, reason="manual override", actor="dave")
    registry.rollback(DATASET, reason="complaints", actor="erin")
    policy = TrafficPolicy(ENDPOINT, DATASET, arms=(Arm(strong.version, 1),))
    set_policy(ws, policy, reason="launch", actor="frank")
    canary = TrafficPolicy(ENDPOINT, DATASET, arms=(Arm(strong.version, 90), Arm(weak.version, 10)))
    set_policy(ws, canary, reason="canary", actor="frank")
    rollback_policy(ws, ENDPOINT, reason="canary too slow", actor="grace")
    record_threshold_change(ws, DATASET, before=0.5, after=0.35, reason="cost review")
    yield ws
    ws.close()


def test_every_change_is_one_entry_of_one_trail_with_before_and_after(
    governed: Workspace,
) -> None:
    shown = shipyard(governed, "audit", "log", "--json")
    assert shown.exit_code == 0, shown.output
    trail = json.loads(shown.stdout)
    assert [e["sequence"] for e in trail] == list(range(1, len(trail) + 1))
    assert [(e["kind"], e["action"]) for e in trail] == [
        ("model", "register"),
        ("model", "register"),
        ("model", "promote"),
        ("model", "refuse"),
        ("model", "promote"),
        ("model", "rollback"),
        ("endpoint", "policy.set"),
        ("endpoint", "policy.set"),
        ("endpoint", "policy.rollback"),
        ("model", "threshold"),
    ]
    strong = ModelRegistry(governed).get(DATASET, 1)
    assert trail[0]["details"]["native_sha256"] == strong.native_sha256  # which file, by hash
    assert trail[0]["details"]["dataset_hash"] == strong.dataset_hash
    refusal, override, rollback = trail[3], trail[4], trail[5]
    assert refusal["details"]["passed"] is False  # the gate's result, kept with the refusal
    assert refusal["before"] == refusal["after"] == {"alias": "champion", "version": 1}
    assert (override["actor"], override["before"]["version"], override["after"]["version"]) == (
        "dave",
        1,
        2,
    )
    assert (rollback["before"]["version"], rollback["after"]["version"]) == (2, 1)
    policy_rollback = trail[8]
    assert policy_rollback["actor"] == "grace"
    assert policy_rollback["before"]["arms"] == [
        {"version": 1, "weight": 90.0},
        {"version": 2, "weight": 10.0},
    ]
    assert policy_rollback["after"]["arms"] == [{"version": 1, "weight": 1.0}]
    assert policy_rollback["after"]["revision"] == 3
    assert trail[9]["before"] == {"threshold": 0.5} and trail[9]["after"] == {"threshold": 0.35}


def test_the_json_export_verifies_with_the_documented_recipe_alone(governed: Workspace) -> None:
    """docs/governance-audit.md: anyone can check an export with hashlib and json."""
    trail = json.loads(shipyard(governed, "audit", "log", "--json").stdout)
    previous = "0" * 64
    for entry in trail:
        content = {k: v for k, v in entry.items() if k != "hash"}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert entry["previous_hash"] == previous
        assert hashlib.sha256(text.encode()).hexdigest() == entry["hash"]
        previous = entry["hash"]


def test_the_log_filters_by_subject_and_kind_and_models_history_reads_the_same_trail(
    governed: Workspace,
) -> None:
    endpoint = shipyard(governed, "audit", "log", "--subject", ENDPOINT)
    assert endpoint.exit_code == 0, endpoint.output
    assert "policy.rollback" in endpoint.output and "r2 v1 90% · v2 10%" in endpoint.output
    assert "promote" not in endpoint.output
    refused = shipyard(governed, "audit", "log", "--subject", DATASET, "--action", "refuse")
    assert "gate failed" in refused.output and "v1 -> v1" in refused.output
    none = shipyard(governed, "audit", "log", "--subject", "nobody")
    assert none.exit_code == 0 and "No entries match." in none.output
    history = shipyard(governed, "models", "history", DATASET)
    assert history.exit_code == 0, history.output
    for action in ("register", "refuse", "promote", "rollback", "threshold"):
        assert action in history.output
    assert "policy.set" not in history.output  # an endpoint's entries are not the model's
    registry = ModelRegistry(governed)
    assert [e.action for e in registry.history(DATASET)][-2:] == ["rollback", "threshold"]


def test_verify_passes_then_names_an_edited_entry_and_exits_1(governed: Workspace) -> None:
    intact = shipyard(governed, "audit", "verify", "--json")
    assert intact.exit_code == 0, intact.output
    report = json.loads(intact.stdout)
    assert report["ok"] and report["entries"] == 10 and report["problem"] is None
    head = report["head"]
    assert shipyard(governed, "audit", "verify", "--expect-head", head).exit_code == 0

    with governed.engine.begin() as conn:  # around Shipyard, on whichever database
        conn.execute(
            text(
                "UPDATE shipyard_registry_events SET actor = 'carol' WHERE action = 'promote' "
                "AND actor = 'dave'"
            )
        )
    broken = shipyard(governed, "audit", "verify")
    assert broken.exit_code == 1
    assert "entry 5 (promote model credit) was edited" in broken.output
    as_json = json.loads(shipyard(governed, "audit", "verify", "--json").stdout)
    assert as_json["problem"]["sequence"] == 5 and as_json["problem"]["tampering"] == "edited"
    # put it back: the trail verifies again, and the kept head still matches
    with governed.engine.begin() as conn:
        conn.execute(text("UPDATE shipyard_registry_events SET actor = 'dave' WHERE sequence = 5"))
    assert shipyard(governed, "audit", "verify", "--expect-head", head).exit_code == 0


def test_verify_with_a_head_the_trail_lacks_fails(governed: Workspace) -> None:
    result = shipyard(governed, "audit", "verify", "--expect-head", "ab" * 32)
    assert result.exit_code == 1
    assert "not in the trail" in result.output


def test_verify_state_names_changes_made_around_shipyard(governed: Workspace) -> None:
    intact = shipyard(governed, "audit", "verify", "--state")
    assert intact.exit_code == 0, intact.output
    assert "live state explained" in intact.output

    client = ModelRegistry(governed).tracker.client
    client.set_registered_model_alias(DATASET, "champion", "2")  # straight to MLflow
    with governed.engine.begin() as conn:  # a policy row no set_policy wrote
        conn.execute(
            text(
                "INSERT INTO shipyard_traffic_policies (endpoint, revision, model, arms, "
                "shadows, actor, reason, created_at) VALUES (:endpoint, 4, :model, :arms, "
                "'[]', 'mallory', 'quiet', '2026-11-27 00:00:00')"
            ),
            {"endpoint": ENDPOINT, "model": DATASET, "arms": '[{"version": 2, "weight": 1.0}]'},
        )
    broken = shipyard(governed, "audit", "verify", "--state", "--json")
    assert broken.exit_code == 1
    report = json.loads(broken.stdout)
    assert report["problem"] is None  # the chain is intact: what changed went around it
    assert report["state"]["problems"] == [
        "model credit: champion is v2 but the trail last gave it to v1 (changed outside Shipyard)",
        f"endpoint {ENDPOINT}: policy revision 4 has no audit entry (written outside set_policy)",
    ]
    client.set_registered_model_alias(DATASET, "champion", "1")
    with governed.engine.begin() as conn:
        conn.execute(text("DELETE FROM shipyard_traffic_policies WHERE revision = 4"))
    assert shipyard(governed, "audit", "verify", "--state").exit_code == 0


def test_verify_logs_checks_compacted_parts_against_their_recorded_hashes(
    workspace: Workspace,
) -> None:
    folder = log_folder(workspace, "fraud")
    write_segments(folder, "w1", range(0, 30))
    compacted = shipyard(workspace, "logs", "compact", "fraud")
    assert compacted.exit_code == 0, compacted.output
    intact = shipyard(workspace, "audit", "verify", "--logs")
    assert intact.exit_code == 0, intact.output
    assert "prediction logs intact" in intact.output
    logged = shipyard(workspace, "audit", "log", "--kind", "predictions", "--json")
    (entry,) = json.loads(logged.stdout)
    part = parquet_folder(workspace, "fraud") / next(iter(entry["details"]["parts"]))
    part.write_bytes(part.read_bytes()[:-8] + b"\0" * 8)  # bytes changed after the fact
    broken = shipyard(workspace, "audit", "verify", "--logs", "--json")
    assert broken.exit_code == 1
    report = json.loads(broken.stdout)
    assert not report["ok"] and report["problem"] is None  # the chain is fine, the part is not
    assert report["logs"]["problems"] == [
        f"fraud: part {part.relative_to(parquet_folder(workspace, 'fraud'))} was altered "
        "(its SHA-256 is not the recorded one)"
    ]
