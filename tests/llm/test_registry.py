"""Registering a language model: a version with its GGUF's hash as lineage, a card with the
licence, MLflow by reference, and a tampered GGUF refused at load."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.errors import IntegrityError, ModelNotFoundError, ParameterError
from shipyard.governance.audit import entries
from shipyard.integrity import file_sha256
from shipyard.llm.format import LLM
from shipyard.llm.model import LoadedModel, smollm2_path
from shipyard.llm.registry import register_llm
from shipyard.registry.models import ModelRegistry
from shipyard.workspace import Workspace


@pytest.fixture(scope="module")
def registered(
    tmp_path_factory: pytest.TempPathFactory, smollm2: LoadedModel
) -> Iterator[tuple[Workspace, Path]]:
    """A workspace with ``chat`` v1: a copy of SmolLM2's GGUF (a test may tamper with it)."""
    root = tmp_path_factory.mktemp("llm-registry")
    gguf = root / "smollm2-copy.gguf"
    shutil.copyfile(smollm2_path(), gguf)
    ws = Workspace.init(root / "ws")
    defaults = {"max_tokens": 16, "temperature": 0.0}
    register_llm(ws, "chat", gguf=gguf, defaults=defaults, loaded=smollm2)
    yield ws, gguf
    ws.close()


def test_a_registered_llm_is_a_version_with_its_file_hash_and_licence(
    registered: tuple[Workspace, Path],
) -> None:
    ws, gguf = registered
    mv = ModelRegistry(ws).get("chat", 1)
    sha = file_sha256(gguf)
    assert (mv.framework, mv.model_type, mv.aliases) == ("llm", "llm", ("challenger",))
    assert mv.lineage.dataset == gguf.name and mv.lineage.dataset_hash == sha
    assert mv.input_schema.names == ["prompt"] and mv.output_schema.names == ["completion"]
    assert mv.params["gguf_sha256"] == sha and mv.params["sampling"]["max_tokens"] == 16
    linked = mv.native_path.parent / gguf.name
    assert os.path.samefile(linked, gguf)  # a hard link in the version folder, not a copy
    card = mv.card_path.read_text()
    assert "apache-2.0" in card.lower() and sha in card and "8,192 tokens" in card
    assert "<|im_start|>" in card  # the chat template
    # MLflow holds a pointer to llm.json, not a copy of the 98 MB file
    mlruns = ws.artifact_root / "mlruns"
    assert list(mlruns.rglob("*.gguf")) == []
    (event,) = entries(ws, kind="model", name="chat", action="register")
    assert event.details["native_sha256"] == mv.native_sha256


def test_the_version_generates_and_a_tampered_gguf_is_refused(
    registered: tuple[Workspace, Path],
) -> None:
    ws, gguf = registered
    predictor = ModelRegistry(ws).load("chat", 1)
    llm = predictor.model
    assert isinstance(llm, LLM)
    small = {"llm_max_running": 2, "llm_max_context": 256, "llm_prefix_cache_mb": 0}
    llm.start(ws.settings.model_copy(update=small))
    try:
        (answer,) = predictor.predict([["Name a colour."]])
    finally:
        llm.close()
    assert answer["finish_reason"] in ("stop", "length") and answer["text"].strip()
    assert 0 < answer["completion_tokens"] <= 16 and answer["prompt_tokens"] > 5
    with gguf.open("r+b") as fh:  # the registered file (linked) changes after registration
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(IntegrityError):
        ModelRegistry(ws).load("chat", 1)


def test_bad_registrations_are_refused_naming_what(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"gguf: expected a \.gguf file"):
        register_llm(workspace, "chat", gguf=tmp_path / "missing.gguf")
    with pytest.raises(ParameterError, match="unknown sampling parameter 'beam'"):
        register_llm(workspace, "chat", defaults={"beam": 2})
    with pytest.raises(ModelNotFoundError, match="nowhere"):
        register_llm(workspace, "chat", prompt=("nowhere", 1))
    assert ModelRegistry(workspace).versions("chat") == []
