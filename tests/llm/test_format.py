"""The ``llm`` native format: its manifest, the GGUF linked beside it, verified at load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.errors import IntegrityError, ParameterError, TrainingError
from shipyard.integrity import file_sha256
from shipyard.llm.format import FILE, LLM, LLMConfig, LLMFormat, LLMSpec, texts_of
from shipyard.llm.types import SamplingParams
from shipyard.training.trainers import load_native, native_format


def _spec(gguf: Path, **changes: object) -> LLMSpec:
    values: dict[str, object] = {
        "gguf": gguf.name,
        "sha256": file_sha256(gguf),
        "max_context": 8192,
        "license": "Apache-2.0",
        "prompt": ("support", 2),
        "defaults": {"max_tokens": 32, "temperature": 0.0, "stop": ["\n\n"]},
    }
    values.update(changes)
    return LLMSpec(**values)  # type: ignore[arg-type]


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A stand-in GGUF file (the format never parses it: it links, hashes and names it)."""
    path = tmp_path / "source" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(range(256)) * 16)
    return path


def test_manifest_round_trips_and_the_framework_is_known(gguf: Path) -> None:
    spec = _spec(gguf)
    again = LLMSpec.from_json(spec.to_json())
    assert again == spec and again.prompt == ("support", 2)
    assert json.loads(spec.to_json())["prompt"] == {"name": "support", "version": 2}
    assert isinstance(native_format("llm"), LLMFormat)  # registered through FAMILY_MODULES
    with pytest.raises(IntegrityError, match="not a Shipyard LLM manifest"):
        LLMSpec.from_json(json.dumps({"gguf": "x.gguf"}))


def test_sampling_defaults_and_request_overrides(gguf: Path) -> None:
    spec = _spec(gguf)
    assert spec.sampling() == SamplingParams(max_tokens=32, temperature=0.0, stop=("\n\n",))
    overridden = spec.sampling(max_tokens=5, stop="END", temperature=None, seed=3)
    assert (overridden.max_tokens, overridden.stop, overridden.seed) == (5, ("END",), 3)
    assert overridden.temperature == 0.0  # None keeps the version's default
    with pytest.raises(ParameterError, match="unknown sampling parameter 'beam_width'"):
        _spec(gguf, defaults={"beam_width": 4})
    with pytest.raises(ParameterError, match="max_tokens must be an integer > 0; got 0"):
        _spec(gguf, defaults={"max_tokens": 0})


def test_save_links_the_gguf_and_load_verifies_its_hash(gguf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "v1"
    folder.mkdir()
    spec = _spec(gguf)
    native = LLMFormat()
    native.save(LLM(spec, gguf), folder / FILE)
    linked = folder / gguf.name
    assert linked.is_file() and os.path.samefile(linked, gguf)  # a hard link, not a copy
    loaded = load_native("llm", folder / FILE, file_sha256(folder / FILE))
    assert isinstance(loaded, LLM) and loaded.spec == spec and loaded.gguf == linked
    # a GGUF changed after registration is refused before anything reads it
    linked.unlink()
    linked.write_bytes(gguf.read_bytes()[:-1] + b"!")
    with pytest.raises(IntegrityError):
        native.load(folder / FILE)


def test_prompts_of_every_batch_shape() -> None:
    assert texts_of(np.array([["a"], ["b"]], dtype=object)) == ["a", "b"]
    assert texts_of(["a", "b"]) == ["a", "b"]
    assert texts_of(pd.DataFrame({"prompt": ["a"], "other": ["x"]})) == ["a"]


def test_config_is_registered_not_fitted() -> None:
    config = LLMConfig(prompt="support@2")
    assert config.model_type == "llm" and config.framework == "llm"
    with pytest.raises(TrainingError, match="register_llm"):
        config.fit(pd.DataFrame(), [])
    with pytest.raises(ParameterError, match="has no parameter 'layers'"):
        LLMConfig(layers=3)
