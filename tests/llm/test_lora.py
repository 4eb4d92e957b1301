"""LoRA adapters: the file (round trip, hash check), peft's weights converted exactly, a few
training steps that lower the loss (tracked in MLflow), registration and its audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

from shipyard.errors import IntegrityError, ModelNotFoundError, ParameterError
from shipyard.llm.lora import (
    EXPERIMENT,
    PEFT_MODULES,
    TrainedAdapter,
    adapter_from_peft,
    generate,
    get_adapter,
    list_adapters,
    load_adapter,
    merged_model,
    register_adapter,
    save_adapter,
    train_lora,
)
from shipyard.llm.types import LoraAdapter
from shipyard.workspace import Workspace

if TYPE_CHECKING:
    from shipyard.llm.model import LoadedModel

BASE = "ab" * 32


def _random_adapter(rank: int = 4, name: str = "demo") -> LoraAdapter:
    g = torch.Generator().manual_seed(0)
    weights = {
        (0, "q"): (torch.randn(rank, 576, generator=g), torch.randn(576, rank, generator=g)),
        (3, "down"): (torch.randn(rank, 1536, generator=g), torch.randn(576, rank, generator=g)),
    }
    return LoraAdapter(name, rank, 8.0, BASE, weights, task="sentiment")


def test_adapter_file_round_trip_and_a_tampered_file_is_refused(tmp_path: Path) -> None:
    adapter = _random_adapter()
    path = tmp_path / "demo.safetensors"
    sha256 = save_adapter(adapter, path)
    back = load_adapter(path, sha256)
    assert (back.name, back.rank, back.alpha, back.base_sha256, back.task) == (
        "demo", 4, 8.0, BASE, "sentiment"
    )  # fmt: skip
    assert set(back.weights) == {(0, "q"), (3, "down")}
    for key, (a, b) in adapter.weights.items():
        assert torch.equal(back.weights[key][0], a) and torch.equal(back.weights[key][1], b)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="SHA-256"):
        load_adapter(path, sha256)
    with pytest.raises(IntegrityError):
        load_adapter(path, None)


def test_bad_adapters_are_refused_naming_the_field(tmp_path: Path) -> None:
    adapter = _random_adapter()
    a, b = adapter.weights[(0, "q")]
    wrong_rank = LoraAdapter("x", 4, 8.0, BASE, {(0, "q"): (a[:2], b)})
    with pytest.raises(ParameterError, match=r"weights\[\(0, 'q'\)\]"):
        save_adapter(wrong_rank, tmp_path / "x.safetensors")
    with pytest.raises(ParameterError, match="module"):
        save_adapter(LoraAdapter("x", 4, 8.0, BASE, {(0, "lm_head"): (a, b)}), tmp_path / "y")
    with pytest.raises(ParameterError, match="base_sha256"):
        save_adapter(LoraAdapter("x", 4, 8.0, "abc", {(0, "q"): (a, b)}), tmp_path / "z")


PEFT_WARNING = "ignore:.*is_gradient_checkpointing:FutureWarning"
"""peft 0.21 reads a property transformers 5 deprecated (theirs, not ours)."""


def _peft_with_random_b(smollm2: LoadedModel) -> Any:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    targets = [PEFT_MODULES[m] for m in ("q", "v", "down")]
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0)
    peft_model = get_peft_model(smollm2.hf_model(), config)
    with torch.no_grad():  # peft starts B at zero: give it weights that change the output
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.02)
    return peft_model.eval()


@pytest.mark.slow
@pytest.mark.filterwarnings(PEFT_WARNING)
def test_peft_weights_converted_give_peft_model_output(smollm2: LoadedModel) -> None:
    peft_model = _peft_with_random_b(smollm2)
    adapter = adapter_from_peft(
        peft_model, name="parity", base_sha256=smollm2.sha256, task="", rank=4, alpha=8
    )
    assert set(adapter.weights) == {(i, m) for i in range(30) for m in ("q", "v", "down")}
    assert adapter.weights[(0, "q")][0].shape == (4, 576)
    assert adapter.weights[(0, "v")][1].shape == (192, 4)
    ids = torch.tensor([smollm2.encode_chat([{"role": "user", "content": "Name a colour."}])])
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        base = smollm2.hf_model()(input_ids=ids).logits
        ours = merged_model(smollm2.hf_model(), adapter)(input_ids=ids).logits
    assert (expected - base).abs().max() > 0.05  # the adapter matters
    assert (ours - expected).abs().max() < 1e-3
    # through the engine: greedy tokens with the adapter are peft's greedy tokens
    prompt = [{"role": "user", "content": "Name a colour."}]
    with torch.no_grad():
        out = peft_model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
    peft_text = smollm2.decode(out[0, ids.shape[1] :].tolist())
    assert generate(smollm2, [prompt], max_tokens=8, adapter=adapter)[0] == peft_text.rstrip()


@pytest.fixture(scope="module")
def tracked(
    smollm2: LoadedModel, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Workspace, TrainedAdapter]:
    ws = Workspace.init(tmp_path_factory.mktemp("lora") / "ws")
    trained = train_lora(
        smollm2, "sentiment", steps=3, batch_size=2, learning_rate=3e-3, eval_every=3,
        eval_rows=4, max_length=96, workspace=ws, progress=False,
    )  # fmt: skip
    return ws, trained


@pytest.mark.slow
def test_a_few_training_steps_lower_the_loss_and_are_tracked(
    tracked: tuple[Workspace, TrainedAdapter],
) -> None:
    from shipyard.registry.tracking import Tracker

    ws, trained = tracked
    assert [s for s, _ in trained.validation] == [0, 3]
    assert trained.validation[-1][1] < trained.validation[0][1]  # below the base model's
    assert len(trained.losses) == 3
    assert set(trained.adapter.weights) == {(i, m) for i in range(30) for m in ("q", "v")}
    assert 0.0 <= trained.metrics["validation_exact_match"] <= 1.0
    client = Tracker(ws).client
    run = client.get_run(trained.run_id)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.data.params["rank"] == "8" and run.data.params["task"] == "sentiment"
    history = client.get_metric_history(trained.run_id, "train_loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(trained.losses)
    assert "validation_exact_match" in run.data.metrics
    assert [f.path for f in client.list_artifacts(trained.run_id)] == ["sentiment.safetensors"]


def test_training_parameters_are_checked(smollm2: LoadedModel) -> None:
    with pytest.raises(ParameterError, match="targets"):
        train_lora(smollm2, "sentiment", targets=("lm_head",), progress=False)
    with pytest.raises(ParameterError, match="steps"):
        train_lora(smollm2, "sentiment", steps=0, progress=False)
    with pytest.raises(ParameterError, match="task"):
        train_lora(smollm2, "poetry", progress=False)


def test_registration_versions_hash_check_and_audit(
    smollm2: LoadedModel, workspace: Workspace
) -> None:
    from shipyard.governance.audit import entries
    from shipyard.llm.registry import register_llm

    register_llm(workspace, "smollm2", loaded=smollm2)
    weights = _random_adapter().weights
    adapter = LoraAdapter("sentiment", 4, 8.0, smollm2.sha256, weights, task="sentiment")
    trained = TrainedAdapter(
        adapter, {"rank": 4}, [1.0], [(0, 1.0)], {"validation_loss": 1.0}, 1.0, 0
    )
    first = register_adapter(workspace, "smollm2", 1, trained, reason="first")
    second = register_adapter(workspace, "smollm2", 1, trained, reason="again")
    assert (first.version, second.version) == (1, 2)
    assert second.path.is_file() and second.path.parent.name == "adapters"
    assert [a.version for a in list_adapters(workspace, "smollm2", 1)] == [2, 1]
    assert get_adapter(workspace, "smollm2", 1, trained.adapter.name).version == 2
    loaded = get_adapter(workspace, "smollm2", 1, trained.adapter.name, version=1).load()
    key = (0, "q")
    assert torch.equal(loaded.weights[key][1], trained.adapter.weights[key][1])
    with pytest.raises(ModelNotFoundError, match="sentiment v1, sentiment v2"):
        get_adapter(workspace, "smollm2", 1, "extraction")
    foreign = TrainedAdapter(
        LoraAdapter("foreign", 4, 8.0, BASE, _random_adapter().weights), {}, [], [], {}, 0.0, 0
    )
    with pytest.raises(IntegrityError, match="trained on base"):
        register_adapter(workspace, "smollm2", 1, foreign)
    assert [a.name for a in list_adapters(workspace, "smollm2", 1)] == ["sentiment"] * 2
    logged = [e for e in entries(workspace) if e.action == "adapter.register"]
    assert [(e.name, e.version, e.reason) for e in logged] == [
        ("smollm2", 1, "first"), ("smollm2", 1, "again")
    ]  # fmt: skip
    assert logged[-1].after["version"] == 2
    assert logged[-1].after["sha256"] == second.sha256
    with pytest.raises(ModelNotFoundError):
        register_adapter(workspace, "smollm2", 7, trained)
    from click.testing import CliRunner

    from shipyard.cli.main import cli

    root = ["--workspace", str(workspace.root), "llm", "adapters", "list"]
    listed = CliRunner().invoke(cli, [*root, "--base-version", "1", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(a["name"], a["version"]) for a in json.loads(listed.output)] == [
        ("sentiment", 2), ("sentiment", 1)
    ]  # fmt: skip
