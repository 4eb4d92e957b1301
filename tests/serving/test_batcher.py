from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from shipyard.errors import ParameterError
from shipyard.serving.batcher import BatchTimeoutError, MicroBatcher


def test_concurrent_requests_share_one_model_call() -> None:
    calls: list[int] = []

    def predict(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return rows[:, 0] * 2

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(predict, max_batch_size=64, max_wait_ms=20)
        results = await asyncio.gather(
            *(batcher.submit(np.array([[float(i)], [i + 0.5]])) for i in range(10))
        )
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert calls == [20]  # ten requests of two rows, one call
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, [2.0 * i, 2.0 * i + 1])


def test_batches_respect_the_size_limit() -> None:
    calls: list[int] = []

    def predict(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return rows[:, 0]

    async def main() -> None:
        batcher = MicroBatcher(predict, max_batch_size=4, max_wait_ms=20)
        await asyncio.gather(*(batcher.submit(np.ones((1, 1))) for _ in range(10)))
        await batcher.close()

    asyncio.run(main())
    assert max(calls) <= 4 and sum(calls) == 10


def test_a_failed_batch_answers_every_request_with_the_error() -> None:
    def predict(rows: np.ndarray) -> np.ndarray:
        raise RuntimeError("model exploded")

    async def main() -> list[object]:
        batcher = MicroBatcher(predict, max_wait_ms=10)
        results = await asyncio.gather(
            *(batcher.submit(np.ones((1, 2))) for _ in range(5)), return_exceptions=True
        )
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)


def test_a_request_that_waits_too_long_gets_a_timeout_and_later_ones_still_work() -> None:
    gate = threading.Event()

    def predict(rows: np.ndarray) -> np.ndarray:
        if not gate.is_set():
            time.sleep(0.3)
        return rows[:, 0]

    async def main() -> np.ndarray:
        batcher = MicroBatcher(predict, max_wait_ms=0, timeout_ms=50)
        with pytest.raises(BatchTimeoutError, match="waited more than 50 ms"):
            await batcher.submit(np.ones((1, 1)))
        gate.set()
        await asyncio.sleep(0.4)
        result = await batcher.submit(np.full((1, 1), 7.0))
        await batcher.close()
        return result

    assert asyncio.run(main()).tolist() == [7.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"max_wait_ms": -3},
            "The 'max_wait_ms' parameter of MicroBatcher must be a float in \\[0, 1000\\]. "
            "Got -3 instead.",
        ),
        ({"max_batch_size": 0}, "'max_batch_size' parameter of MicroBatcher must be an int >= 1"),
    ],
)
def test_parameters_are_checked(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        MicroBatcher(lambda rows: rows, **kwargs)  # type: ignore[arg-type]
