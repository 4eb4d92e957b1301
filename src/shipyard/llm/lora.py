"""LoRA adapters of a language model: train with ``peft``, store as safetensors, register.

**File.** An adapter is one safetensors file: tensors ``layers.{i}.{module}.A`` (``[rank,
in]``) and ``layers.{i}.{module}.B`` (``[out, rank]``), float32, ``module`` one of
:data:`~shipyard.llm.types.LORA_MODULES`; the header's metadata holds ``format``
(``shipyard.lora/1``), ``name``, ``rank``, ``alpha``, ``base_sha256`` (the GGUF it was
trained on) and ``task``. :func:`save_adapter` returns the file's SHA-256;
:func:`load_adapter` verifies it before reading a byte of tensors.

**Training.** :func:`train_lora` wraps a copy of the base model's float32 ``transformers``
model with ``peft`` LoRA layers on the chosen projections, and trains them on a task of
:mod:`shipyard.llm.tasks`: each row is the task's chat prompt (with the generation prompt)
followed by the expected answer and ``<|im_end|>``; the loss counts the answer's tokens
only. Seeded (LoRA's initial ``A``, the row order, dropout). Every ``eval_every`` steps the
validation loss is measured on a fixed set of validation rows and the best weights so far
are kept (early stopping after ``patience`` evaluations without improvement); at the end
the kept adapter's task metric is measured on validation rows by greedy generation. With a
workspace the run is tracked in MLflow (experiment ``llm-adapters``: parameters, training
loss per step, validation loss and metric, the adapter file as an artifact).

**Registry.** :func:`register_adapter` stores an adapter of a registered base version
(``<artifact_root>/models/<model>/v<base>/adapters/<name>-v<version>.safetensors``) in
table ``llm_adapters`` (versions 1, 2 ... per model and adapter name), refusing an adapter
whose base SHA-256 is not the registered version's GGUF hash, and records it in the audit
trail (kind ``model``, action ``adapter.register``).

Example::

    model = load_model()
    trained = train_lora(model, "sentiment", steps=200, workspace=ws)
    av = register_adapter(ws, "smollm2", 1, trained, reason="sentiment adapter")
    adapter = av.load()           # hash-verified LoraAdapter, for the engine

``python -m shipyard.llm.lora --task sentiment --task extraction --out
docs/llm-adapters-results.md`` trains both adapters and compares them with the base model's
prompts on validation and test rows (:mod:`shipyard.cli.llm_adapters`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.errors import IntegrityError, ModelNotFoundError, ParameterError, invalid_parameter
from shipyard.llm.types import LORA_MODULES, LoraAdapter

if TYPE_CHECKING:
    import torch

    from shipyard.llm.model import LoadedModel
    from shipyard.llm.tasks import Messages, Task
    from shipyard.workspace import Workspace

logger = logging.getLogger(__name__)

FORMAT = "shipyard.lora/1"
EXPERIMENT = "llm-adapters"
PEFT_MODULES = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
}
"""Our module names -> the Llama projections ``peft`` targets."""
_PEFT_KEY = re.compile(
    r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.(?:[\w-]+\.)?weight$"
)
_FILE_KEY = re.compile(r"layers\.(\d+)\.(\w+)\.([AB])$")
_SHA256 = re.compile(r"[0-9a-f]{64}")
ProgressCallback = Callable[[str, int, int], None]


# --- the adapter file ------------------------------------------------------------------


def check_adapter(adapter: LoraAdapter) -> None:
    """Refuse an adapter whose name, rank, alpha, base hash or tensor shapes are wrong."""
    owner = "LoraAdapter"
    if not isinstance(adapter.name, str) or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", adapter.name):
        raise invalid_parameter("name", owner, "letters, digits, '_', '-', '.'", adapter.name)
    if not isinstance(adapter.rank, int) or isinstance(adapter.rank, bool) or adapter.rank < 1:
        raise invalid_parameter("rank", owner, "an int >= 1", adapter.rank)
    if not isinstance(adapter.alpha, int | float) or not adapter.alpha > 0:
        raise invalid_parameter("alpha", owner, "a number > 0", adapter.alpha)
    if not _SHA256.fullmatch(str(adapter.base_sha256)):
        raise invalid_parameter("base_sha256", owner, "64 hex digits", adapter.base_sha256)
    if not adapter.weights:
        raise invalid_parameter("weights", owner, "at least one (layer, module)", "none")
    for (layer, module), (a, b) in adapter.weights.items():
        where = f"weights[({layer}, {module!r})]"
        if module not in LORA_MODULES:
            raise invalid_parameter(where, owner, f"a module of {LORA_MODULES}", module)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != adapter.rank or b.shape[1] != adapter.rank:
            raise invalid_parameter(
                where,
                owner,
                f"A of shape [rank={adapter.rank}, in] and B of shape [out, rank={adapter.rank}]",
                f"A {list(a.shape)}, B {list(b.shape)}",
            )


def save_adapter(adapter: LoraAdapter, path: Path) -> str:
    """Write ``adapter`` to ``path`` as safetensors (atomically); returns the file's SHA-256."""
    import torch
    from safetensors.torch import save

    from shipyard.integrity import write_atomically

    check_adapter(adapter)
    tensors: dict[str, torch.Tensor] = {}
    for (layer, module), (a, b) in sorted(adapter.weights.items()):
        tensors[f"layers.{layer}.{module}.A"] = a.detach().to(torch.float32).contiguous()
        tensors[f"layers.{layer}.{module}.B"] = b.detach().to(torch.float32).contiguous()
    metadata = {
        "format": FORMAT,
        "name": adapter.name,
        "rank": str(adapter.rank),
        "alpha": repr(float(adapter.alpha)),
        "base_sha256": adapter.base_sha256,
        "task": adapter.task,
    }
    data = save(tensors, metadata=metadata)
    write_atomically(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def load_adapter(path: Path, sha256: str | None) -> LoraAdapter:
    """Read an adapter file after checking its SHA-256 (IntegrityError if it differs)."""
    from safetensors import safe_open

    from shipyard.integrity import verify_sha256

    path = Path(path)
    verify_sha256(path, sha256)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        if meta.get("format") != FORMAT:
            raise IntegrityError(
                f"{path} is not a Shipyard LoRA adapter: header format {meta.get('format')!r}, "
                f"expected {FORMAT!r}"
            )
        pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            match = _FILE_KEY.fullmatch(key)
            if match is None:
                raise IntegrityError(f"{path}: unexpected tensor {key!r}")
            slot = (int(match.group(1)), match.group(2))
            pairs.setdefault(slot, {})[match.group(3)] = handle.get_tensor(key)
    missing = [slot for slot, ab in pairs.items() if set(ab) != {"A", "B"}]
    if missing:
        raise IntegrityError(f"{path}: {missing[0]} lacks its A or B tensor")
    adapter = LoraAdapter(
        name=meta["name"],
        rank=int(meta["rank"]),
        alpha=float(meta["alpha"]),
        base_sha256=meta["base_sha256"],
        weights={slot: (ab["A"], ab["B"]) for slot, ab in sorted(pairs.items())},
        task=meta.get("task", ""),
    )
    check_adapter(adapter)
    return adapter


def adapter_from_peft(
    peft_model: Any, *, name: str, base_sha256: str, task: str, rank: int, alpha: float
) -> LoraAdapter:
    """The LoRA weights of a ``peft`` model as a :class:`LoraAdapter` (copied, float32).

    ``...layers.0.self_attn.q_proj.lora_A.default.weight`` becomes ``weights[(0, "q")][0]``.
    """
    import torch

    names = {proj: module for module, proj in PEFT_MODULES.items()}
    parts: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in peft_model.state_dict().items():
        match = _PEFT_KEY.search(key)
        if match is None:
            continue
        slot = (int(match.group(1)), names[match.group(2)])
        parts.setdefault(slot, {})[match.group(3)] = tensor.detach().to(torch.float32).clone()
    adapter = LoraAdapter(
        name=name,
        rank=rank,
        alpha=float(alpha),
        base_sha256=base_sha256,
        weights={slot: (ab["A"], ab["B"]) for slot, ab in sorted(parts.items())},
        task=task,
    )
    check_adapter(adapter)
    return adapter


def merged_model(hf_model: Any, adapter: LoraAdapter) -> Any:
    """A copy of a ``transformers`` Llama with ``adapter`` merged into its weights
    (``W + scale * B @ A``): what the engine computes with the adapter, in plain HF."""
    import copy

    import torch

    merged = copy.deepcopy(hf_model)
    layers = merged.model.layers
    with torch.no_grad():
        for (layer, module), (a, b) in adapter.weights.items():
            block = (
                layers[layer].mlp if module in ("gate", "up", "down") else layers[layer].self_attn
            )
            linear = getattr(block, PEFT_MODULES[module])
            linear.weight += adapter.scale * (b @ a).to(linear.weight.dtype)
    return merged.eval()


# --- the base model --------------------------------------------------------------------


@dataclass
class _Base:
    """What training and HF generation need of a loaded model."""

    hf: Any
    sha256: str
    encode_chat: Callable[[Messages], list[int]]
    encode_text: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    end_ids: list[int]
    pad_id: int


def _base(model: LoadedModel) -> _Base:
    end_ids = model.encode("<|im_end|>")
    if len(end_ids) != 1:  # not a ChatML model: its first end-of-sequence token ends answers
        end_ids = [model.eos_token_ids[0]]
    return _Base(
        hf=model.hf_model(),
        sha256=model.sha256,
        encode_chat=model.encode_chat,
        encode_text=model.encode,
        decode=model.decode,
        end_ids=end_ids,
        pad_id=model.eos_token_ids[0],
    )


# --- training --------------------------------------------------------------------------


@dataclass
class TrainedAdapter:
    """A trained adapter with what training measured.

    ``losses[i]`` is the training loss of step ``i + 1``; ``validation`` the ``(step,
    validation loss)`` of each evaluation; ``metrics`` the kept adapter's validation metric
    and losses; ``seconds`` the training time (without the final metric).
    """

    adapter: LoraAdapter
    params: dict[str, Any]
    losses: list[float]
    validation: list[tuple[int, float]]
    metrics: dict[str, float]
    seconds: float
    best_step: int
    run_id: str = ""
    skipped_rows: int = 0
    """Training rows longer than ``max_length`` tokens (left out)."""


@dataclass(frozen=True)
class TrainingParams:
    """The settings of one :func:`train_lora` run (checked at construction)."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q", "v")
    steps: int = 200
    batch_size: int = 8
    learning_rate: float = 1e-3
    max_length: int = 160
    seed: int = 0
    eval_every: int = 50
    eval_rows: int = 64
    patience: int = 3
    dropout: float = 0.05

    def __post_init__(self) -> None:
        owner = "train_lora"
        for name in ("rank", "steps", "batch_size", "max_length", "eval_every", "eval_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise invalid_parameter(name, owner, "an int >= 1", value)
        if not isinstance(self.patience, int) or self.patience < 1:
            raise invalid_parameter("patience", owner, "an int >= 1", self.patience)
        for name in ("alpha", "learning_rate"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise invalid_parameter(name, owner, "a number > 0", value)
        if not 0 <= self.dropout < 1:
            raise invalid_parameter("dropout", owner, "a number in [0, 1)", self.dropout)
        unknown = [t for t in self.targets if t not in LORA_MODULES]
        if not self.targets or unknown:
            raise invalid_parameter(
                "targets", owner, f"one or more of {LORA_MODULES}", list(self.targets)
            )

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain values (MLflow params, the registry's ``params``)."""
        from dataclasses import asdict

        values = asdict(self)
        values["targets"] = list(self.targets)
        return values


Example = tuple[list[int], list[int]]
"""A training row: prompt token ids, answer token ids (ending with ``<|im_end|>``)."""


def _examples(
    base: _Base, task: Task, rows: Sequence[Mapping[str, Any]], limit: int
) -> tuple[list[Example], int]:
    examples, skipped = [], 0
    for row in rows:
        prompt = base.encode_chat(task.messages(row))
        answer = base.encode_text(task.target(row)) + base.end_ids
        if len(prompt) + len(answer) > limit:
            skipped += 1
            continue
        examples.append((prompt, answer))
    return examples, skipped


def _batch(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded ids with their attention mask, positions and labels (-100 on the prompt
    and padding): every row ends with its answer, so the logits of the last positions are
    all the loss needs (the vocabulary projection of the prompt positions is skipped)."""
    import torch

    width = max(len(p) + len(a) for p, a in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (prompt, answer) in enumerate(examples):
        n = len(prompt) + len(answer)
        ids[i, width - n :] = torch.tensor(prompt + answer)
        mask[i, width - n :] = 1
        labels[i, width - len(answer) :] = torch.tensor(answer)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels}


def _answer_loss(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of the answer tokens, and how many there are."""
    import torch

    labels = batch["labels"]
    keep = int((labels != -100).sum(-1).max()) + 1
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=keep,
    ).logits[:, :-1]
    targets = labels[:, labels.shape[1] - keep + 1 :]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
    )
    return loss, int((targets != -100).sum())


def _mean_loss(peft_model: Any, batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """Mean answer-token loss over ``batches``, without gradients."""
    import torch

    peft_model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            loss, n = _answer_loss(peft_model, batch)
            total += float(loss)
            tokens += n
    peft_model.train()
    return total / max(tokens, 1)


def _peft_model(hf: Any, params: TrainingParams) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(params.seed)
    config = LoraConfig(
        r=params.rank,
        lora_alpha=params.alpha,  # type: ignore[arg-type]  # peft says int; floats work
        lora_dropout=params.dropout,
        target_modules=[PEFT_MODULES[t] for t in params.targets],
        bias="none",
        task_type="CAUSAL_LM",
    )
    # hf_model() gives a fresh module tree over the loaded (frozen) tensors: peft wraps its
    # modules in place and never writes the base weights, so no copy is needed
    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated is_gradient_checkpointing (not ours to fix)
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        return get_peft_model(hf, config)


def _reporter(progress: bool | ProgressCallback) -> ProgressCallback:
    if callable(progress):
        return progress

    def log(stage: str, done: int, total: int) -> None:
        if progress and (done == total or done % 10 == 0):
            logger.info("%s: %d/%d", stage, done, total)

    return log


def train_lora(
    model: LoadedModel,
    task: str,
    *,
    name: str | None = None,
    rank: int = 8,
    alpha: float = 16.0,
    targets: Sequence[str] = ("q", "v"),
    steps: int = 200,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    max_length: int = 160,
    seed: int = 0,
    eval_every: int = 50,
    eval_rows: int = 64,
    patience: int = 3,
    workspace: Workspace | None = None,
    progress: bool | ProgressCallback = True,
) -> TrainedAdapter:
    """Train a LoRA adapter for ``task`` (``sentiment``, ``extraction``) over ``model``.

    Returns the adapter with the lowest validation loss seen, its losses and validation
    metric; with ``workspace`` the run is logged to MLflow (experiment ``llm-adapters``).
    ``progress`` True logs progress, a callable gets ``(stage, done, total)``.
    """
    from shipyard.llm.tasks import get_task, load_task

    spec = get_task(task)
    params = TrainingParams(
        rank, alpha, tuple(targets), steps, batch_size, learning_rate, max_length, seed,
        eval_every, eval_rows, patience,
    )  # fmt: skip
    base = _base(model)
    report = _reporter(progress)
    train, skipped = _examples(base, spec, load_task(task, "train"), max_length)
    if not train:
        raise ParameterError(f"max_length={max_length} tokens leaves no training row of {task!r}")
    val_rows = load_task(task, "validation", limit=eval_rows, seed=seed)
    val, _ = _examples(base, spec, val_rows[:32], max_length)
    val_batches = [_batch(val[i : i + 16], base.pad_id) for i in range(0, len(val), 16)]
    started = time.perf_counter()
    peft_model = _peft_model(base.hf, params)
    losses, validation, best = _train_loop(peft_model, train, val_batches, params, base, report)
    seconds = time.perf_counter() - started
    adapter = adapter_from_peft(
        peft_model,
        name=name or task,
        base_sha256=base.sha256,
        task=task,
        rank=rank,
        alpha=alpha,
    )
    adapter.weights = best[1] or adapter.weights
    del peft_model
    scores = evaluate(model, task, val_rows, adapter=adapter, progress=report)
    metrics = {f"validation_{k}": v for k, v in _means(scores).items()}
    metrics["validation_loss"] = min((loss for _, loss in validation), default=float("nan"))
    metrics["train_loss_last"] = losses[-1]
    trained = TrainedAdapter(
        adapter=adapter,
        params={**params.as_dict(), "task": task, "train_rows": len(train)},
        losses=losses,
        validation=validation,
        metrics=metrics,
        seconds=seconds,
        best_step=best[0],
        skipped_rows=skipped,
    )
    if workspace is not None:
        trained.run_id = track_training(workspace, trained)
    return trained


Weights = dict[tuple[int, str], tuple["torch.Tensor", "torch.Tensor"]]


def _train_loop(
    peft_model: Any,
    train: Sequence[Example],
    val_batches: Sequence[dict[str, torch.Tensor]],
    params: TrainingParams,
    base: _Base,
    report: ProgressCallback,
) -> tuple[list[float], list[tuple[int, float]], tuple[int, Weights | None]]:
    """AdamW with a 10% linear warm-up then linear decay; keeps the best validation weights."""
    import random

    import torch

    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=0.0)
    warmup = max(1, params.steps // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.05, (params.steps - step) / max(1, params.steps - warmup))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    order = random.Random(params.seed)
    pool: list[int] = []
    losses: list[float] = []
    validation: list[tuple[int, float]] = []
    best: tuple[int, Weights | None] = (0, None)
    best_loss, stale = _mean_loss(peft_model, val_batches), 0
    validation.append((0, best_loss))  # the base model's (B starts at zero)
    peft_model.train()
    for step in range(1, params.steps + 1):
        if len(pool) < params.batch_size:
            pool += order.sample(range(len(train)), len(train))
        picked, pool = pool[: params.batch_size], pool[params.batch_size :]
        summed, n = _answer_loss(peft_model, _batch([train[i] for i in picked], base.pad_id))
        loss = summed / n
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        report("training", step, params.steps)
        if step % params.eval_every and step != params.steps:
            continue
        val_loss = _mean_loss(peft_model, val_batches)
        validation.append((step, val_loss))
        logger.info("step %d: train loss %.4f, validation loss %.4f", step, losses[-1], val_loss)
        if val_loss < best_loss:
            best_loss, stale = val_loss, 0
            kept = adapter_from_peft(peft_model, name="best", base_sha256="0" * 64, task="",
                                     rank=params.rank, alpha=params.alpha)  # fmt: skip
            best = (step, kept.weights)
        else:
            stale += 1
            if stale >= params.patience:
                logger.info("early stop at step %d (best step %d)", step, best[0])
                break
    return losses, validation, best


def _means(scores: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = list(scores[0]) if scores else []
    return {k: sum(s[k] for s in scores) / len(scores) for k in keys}


def track_training(workspace: Workspace, trained: TrainedAdapter) -> str:
    """Log a training run to MLflow (experiment ``llm-adapters``); returns the run id."""
    import tempfile

    from mlflow.entities import Metric, Param, RunTag

    from shipyard.registry.tracking import Tracker, environment_tags

    tracker = Tracker(workspace)
    client = tracker.client
    experiment = tracker.experiment_id(EXPERIMENT)
    adapter = trained.adapter
    run = client.create_run(experiment, run_name=f"{adapter.task}-{adapter.name}")
    run_id = str(run.info.run_id)
    stamp = int(time.time() * 1000)
    try:
        metrics = [Metric("train_loss", v, stamp, i + 1) for i, v in enumerate(trained.losses)]
        metrics += [Metric("validation_loss", v, stamp, s) for s, v in trained.validation]
        metrics += [Metric(k, float(v), stamp, 0) for k, v in trained.metrics.items()]
        metrics.append(Metric("training_seconds", trained.seconds, stamp, 0))
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, str(v)[:6000]) for k, v in trained.params.items()],
            tags=[
                RunTag(k, v)
                for k, v in {
                    "adapter": adapter.name,
                    "base_sha256": adapter.base_sha256,
                    **environment_tags(),
                }.items()
            ],
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{adapter.name}.safetensors"
            save_adapter(adapter, path)
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id


# --- generation and evaluation ---------------------------------------------------------


def generate(
    model: LoadedModel,
    prompts: Sequence[Messages],
    *,
    max_tokens: int,
    adapter: LoraAdapter | None = None,
) -> list[str]:
    """Greedy completions of chat ``prompts`` from the engine (with ``adapter``, if given)."""
    from shipyard.llm.evaluate import generate as engine_generate
    from shipyard.llm.types import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    return [r.text for r in engine_generate(model, prompts, params, adapter)]


def evaluate(
    model: LoadedModel,
    task: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    adapter: LoraAdapter | None = None,
    examples: Sequence[Mapping[str, Any]] = (),
    progress: ProgressCallback | None = None,
) -> list[dict[str, float]]:
    """Each row's metrics (:meth:`Task.metrics`) for greedy completions of ``task``'s prompt
    (``examples`` as few-shot turns), with or without ``adapter``."""
    from shipyard.llm.tasks import get_task

    spec = get_task(task)
    prompts = [spec.messages(row, examples) for row in rows]
    completions = generate(model, prompts, max_tokens=spec.max_tokens, adapter=adapter)
    if progress is not None:
        progress("evaluating", len(rows), len(rows))
    return [spec.metrics(text, row) for text, row in zip(completions, rows, strict=True)]


# --- the registry ----------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterVersion:
    """A registered adapter version of a base model version."""

    model: str
    base_version: int
    name: str
    version: int
    task: str
    path: Path
    sha256: str
    base_sha256: str
    run_id: str
    params: dict[str, Any]
    metrics: dict[str, float]
    actor: str
    created_at: datetime

    def load(self) -> LoraAdapter:
        """The adapter's weights, after checking the file's SHA-256."""
        return load_adapter(self.path, self.sha256)


def registered_base(workspace: Workspace, model: str, base_version: int) -> tuple[Path, str]:
    """The GGUF file and SHA-256 of a registered language model version (its ``llm.json``)."""
    from shipyard.integrity import verify_sha256
    from shipyard.registry.models import ModelRegistry

    version = ModelRegistry(workspace).get(model, base_version)
    if version.framework != "llm":
        raise ParameterError(
            f"model {model!r} version {base_version} is a {version.framework!r} model, not a "
            "language model (framework 'llm'): adapters need a registered LLM"
        )
    verify_sha256(version.native_path, version.native_sha256)
    spec = json.loads(version.native_path.read_text())
    return version.native_path.parent / spec["gguf"], str(spec["sha256"])


def load_base(workspace: Workspace, model: str, base_version: int) -> LoadedModel:
    """Load a registered language model version for training (its GGUF hash verified)."""
    from shipyard.llm.model import load_model

    path, sha256 = registered_base(workspace, model, base_version)
    return load_model(path, sha256=sha256)


def register_adapter(
    workspace: Workspace,
    model: str,
    base_version: int,
    trained: TrainedAdapter,
    *,
    actor: str | None = None,
    reason: str = "registered a LoRA adapter",
) -> AdapterVersion:
    """Store ``trained``'s adapter as the next version of its name over ``model`` v``base``.

    Refuses (IntegrityError) an adapter trained on another GGUF than the base version's.
    """
    from sqlalchemy import func, insert, select

    from shipyard.governance import audit
    from shipyard.registry.models import current_user
    from shipyard.tables import llm_adapters as table

    adapter = trained.adapter
    check_adapter(adapter)
    _, expected = registered_base(workspace, model, base_version)
    if adapter.base_sha256 != expected:
        raise IntegrityError(
            f"Adapter {adapter.name!r} was trained on base SHA-256 {adapter.base_sha256[:12]}..., "
            f"but {model!r} version {base_version} is {expected[:12]}...; train it on that "
            "version's model"
        )
    folder = workspace.artifact_root / "models" / model / f"v{base_version}" / "adapters"
    who = actor or current_user()
    with audit.transaction(workspace) as conn:
        query = select(func.max(table.c.version)).where(
            (table.c.model == model) & (table.c.adapter == adapter.name)
        )
        version = int(conn.execute(query).scalar() or 0) + 1
        path = folder / f"{adapter.name}-v{version}.safetensors"
        sha256 = save_adapter(adapter, path)
        row = {
            "model": model,
            "base_version": base_version,
            "base_sha256": expected,
            "adapter": adapter.name,
            "version": version,
            "task": adapter.task,
            "path": str(path.relative_to(workspace.artifact_root)),
            "sha256": sha256,
            "run_id": trained.run_id,
            "params": trained.params,
            "metrics": trained.metrics,
            "actor": who,
            "created_at": datetime.now(UTC).replace(tzinfo=None),
        }
        conn.execute(insert(table).values(**row))
        audit.append(
            workspace,
            kind="model",
            name=model,
            version=base_version,
            action="adapter.register",
            reason=reason,
            actor=who,
            after={"adapter": adapter.name, "version": version, "sha256": sha256},
            details={"task": adapter.task, "run_id": trained.run_id, **trained.metrics},
            connection=conn,
        )
    return _version(workspace, row)


def _version(workspace: Workspace, row: Mapping[str, Any]) -> AdapterVersion:
    return AdapterVersion(
        model=row["model"],
        base_version=int(row["base_version"]),
        name=row["adapter"],
        version=int(row["version"]),
        task=row["task"],
        path=workspace.artifact_root / row["path"],
        sha256=row["sha256"],
        base_sha256=row["base_sha256"],
        run_id=row["run_id"],
        params=dict(row["params"]),
        metrics=dict(row["metrics"]),
        actor=row["actor"],
        created_at=row["created_at"],
    )


def list_adapters(workspace: Workspace, model: str, base_version: int) -> list[AdapterVersion]:
    """The adapters of ``model`` v``base_version``: by name, each name's latest version first."""
    from sqlalchemy import select

    from shipyard.tables import llm_adapters as table

    query = (
        select(table)
        .where((table.c.model == model) & (table.c.base_version == base_version))
        .order_by(table.c.adapter, table.c.version.desc())
    )
    with workspace.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [_version(workspace, dict(row)) for row in rows]


def get_adapter(
    workspace: Workspace, model: str, base_version: int, name: str, version: int | None = None
) -> AdapterVersion:
    """One adapter version (the latest of ``name`` when ``version`` is None)."""
    found = [a for a in list_adapters(workspace, model, base_version) if a.name == name]
    if version is not None:
        found = [a for a in found if a.version == version]
    if not found:
        known = sorted(
            {f"{a.name} v{a.version}" for a in list_adapters(workspace, model, base_version)}
        )
        wanted = name if version is None else f"{name} v{version}"
        raise ModelNotFoundError(
            f"No adapter {wanted!r} of {model!r} version {base_version}; "
            f"registered: {', '.join(known) or 'none'}"
        )
    return found[0]


if __name__ == "__main__":  # python -m shipyard.llm.lora: the results run
    from shipyard.cli.llm_adapters import main

    main()
