"""The registry's tests run on SQLite and on PostgreSQL (the test id says which)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str:
    """Each module runs once per backend; module fixtures that make a workspace ask for it."""
    return str(request.param)
