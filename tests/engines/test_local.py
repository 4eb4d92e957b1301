"""The local engine: order, notes naming the failing item, progress, threads."""

from __future__ import annotations

import pytest

from shipyard.engines import LocalEngine, get_engine
from shipyard.workspace import Workspace


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise KeyError(f"no {x}")
    return x * 10


@pytest.mark.parametrize("workers", [1, 3])
def test_results_keep_the_items_order(workers: int) -> None:
    seen: list[tuple[int, int]] = []
    out = LocalEngine(workers).map(
        lambda x: x * x, [3, 1, 2], progress=lambda d, t: seen.append((d, t))
    )
    assert out == [9, 1, 4]
    assert seen[-1] == (3, 3)


def test_an_empty_list_runs_nothing() -> None:
    assert LocalEngine().map(_fail_on_three, []) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_item_raises_its_own_exception_named(workers: int) -> None:
    with pytest.raises(KeyError, match="no 3") as caught:
        LocalEngine(workers).map(
            _fail_on_three, [1, 2, 3, 4], label="fold", describe=lambda i, x: f"fold {i} (x={x})"
        )
    assert "(while running fold 2 (x=3) of 4 on the local engine)" in caught.value.__notes__


def test_a_describe_that_fails_falls_back_to_the_label() -> None:
    def broken(i: int, item: object) -> str:
        raise RuntimeError("describe broke")

    with pytest.raises(KeyError) as caught:
        LocalEngine().map(_fail_on_three, [3], label="trial", describe=broken)
    assert "(while running trial 0 of 1 on the local engine)" in caught.value.__notes__


def test_the_default_engine_setting_is_local(workspace: Workspace) -> None:
    assert get_engine(workspace).name == "local"
