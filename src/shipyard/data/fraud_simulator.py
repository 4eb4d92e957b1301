"""The credit-card transaction simulator of the *Fraud Detection Handbook*.

Reference: Y.-A. Le Borgne, W. Siblini, B. Lebichot, G. Bontempi, *Reproducible Machine
Learning for Credit Card Fraud Detection — Practical Handbook*, Université Libre de
Bruxelles, 2022, chapter 3.2 ("Transaction data simulator").

Two modes share the profiles and the fraud scenarios:

``reference``
    Draw for draw the published generator (numpy's and Python's global generators reseeded
    per customer, the same call order), so the default configuration reproduces the
    published data set: 1,754,155 transactions, 14,681 frauds, identical IDs. Customers
    are spread over worker processes; each one reseeds its own generators, so the result
    does not depend on the number of workers.
``fast``
    The same distributions, drawn vectorized from ``numpy.random.Generator``. Not the
    published draws, about ten times faster; for tests and experiments at other sizes.

Example::

    >>> sim = FraudSimulator(n_customers=50, n_terminals=100, n_days=10, mode="fast")
    >>> data = sim.simulate()
    >>> list(data.transactions.columns)[:4]
    ['TRANSACTION_ID', 'TX_DATETIME', 'CUSTOMER_ID', 'TERMINAL_ID']
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any, Literal

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import NDArray

    from shipyard.data.catalog import Dataset
    from shipyard.workspace import Workspace

Mode = Literal["reference", "fast"]
ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)`` while a simulation runs."""

TRANSACTION_COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class SimulatedData:
    """The three tables a simulation produces."""

    customers: pd.DataFrame
    terminals: pd.DataFrame
    transactions: pd.DataFrame


@dataclass(frozen=True)
class _CustomerBlock:
    """Everything a worker needs to generate one slice of customers (picklable)."""

    customer_ids: list[int]
    mean_amount: list[float]
    std_amount: list[float]
    mean_nb_tx_per_day: list[float]
    terminals: list[list[int]]
    n_days: int


class FraudSimulator:
    """Simulate card transactions with three fraud scenarios (the handbook's generator).

    Parameters are stored as given and checked when :meth:`simulate` runs. The defaults
    are the published data set's: 5,000 customers, 10,000 terminals, 183 days from
    2018-04-01, terminals within radius 5 of a customer.
    """

    def __init__(
        self,
        n_customers: int = 5_000,
        n_terminals: int = 10_000,
        n_days: int = 183,
        start_date: str = "2018-04-01",
        radius: float = 5.0,
        mode: Mode = "reference",
        n_jobs: int | None = None,
        seed: int = 0,
    ) -> None:
        self.n_customers = n_customers
        self.n_terminals = n_terminals
        self.n_days = n_days
        self.start_date = start_date
        self.radius = radius
        self.mode = mode
        self.n_jobs = n_jobs
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        """Return the constructor parameters (what a data set registration records)."""
        return {
            "n_customers": self.n_customers,
            "n_terminals": self.n_terminals,
            "n_days": self.n_days,
            "start_date": self.start_date,
            "radius": self.radius,
            "mode": self.mode,
            "seed": self.seed,
        }

    def _validate(self) -> None:
        owner = type(self).__name__
        for name in ("n_customers", "n_terminals", "n_days"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise invalid_parameter(name, owner, "an int >= 1", value)
        if self.mode not in ("reference", "fast"):
            raise invalid_parameter("mode", owner, "one of 'reference', 'fast'", self.mode)
        if not isinstance(self.radius, int | float) or self.radius <= 0:
            raise invalid_parameter("radius", owner, "a number > 0", self.radius)
        try:
            date.fromisoformat(self.start_date)
        except (TypeError, ValueError):
            raise invalid_parameter(
                "start_date", owner, "an ISO date such as '2018-04-01'", self.start_date
            ) from None
        if self.n_jobs is not None and (not isinstance(self.n_jobs, int) or self.n_jobs < 1):
            raise invalid_parameter("n_jobs", owner, "None or an int >= 1", self.n_jobs)

    def simulate(self, progress: ProgressCallback | None = None) -> SimulatedData:
        """Generate customers, terminals and labelled transactions.

        ``progress(stage, done, total)`` is called as customers are generated and as fraud
        days are applied, so a caller can draw a progress bar.
        """
        self._validate()
        customers = customer_profiles(self.n_customers, seed=self.seed)
        terminals = terminal_profiles(self.n_terminals, seed=self.seed + 1)
        available = terminals_within_radius(customers, terminals, self.radius)
        customers["nb_terminals"] = [len(a) for a in available]
        if self.mode == "reference":
            columns = _reference_transactions(
                customers, available, self.n_days, self.n_jobs, progress
            )
        else:
            columns = _fast_transactions(customers, available, self.n_days, self.seed, progress)
        transactions = _assemble(columns, self.start_date)
        add_frauds(customers, terminals, transactions, progress)
        return SimulatedData(customers=customers, terminals=terminals, transactions=transactions)


def customer_profiles(n_customers: int, seed: int = 0) -> pd.DataFrame:
    """Draw customer locations, spending habits and activity, in customer order (seed 0)."""
    import numpy as np
    import pandas as pd

    rs = np.random.RandomState(seed)
    rows = []
    for customer_id in range(n_customers):
        x = rs.uniform(0, 100)
        y = rs.uniform(0, 100)
        mean_amount = rs.uniform(5, 100)
        mean_nb_tx_per_day = rs.uniform(0, 4)
        rows.append((customer_id, x, y, mean_amount, mean_amount / 2, mean_nb_tx_per_day))
    return pd.DataFrame(
        rows,
        columns=[
            "CUSTOMER_ID",
            "x_customer_id",
            "y_customer_id",
            "mean_amount",
            "std_amount",
            "mean_nb_tx_per_day",
        ],
    )


def terminal_profiles(n_terminals: int, seed: int = 1) -> pd.DataFrame:
    """Draw terminal locations uniformly on the 100 x 100 grid (seed 1)."""
    import numpy as np
    import pandas as pd

    rs = np.random.RandomState(seed)
    xy = [(rs.uniform(0, 100), rs.uniform(0, 100)) for _ in range(n_terminals)]
    frame = pd.DataFrame(xy, columns=["x_terminal_id", "y_terminal_id"])
    frame.insert(0, "TERMINAL_ID", np.arange(n_terminals, dtype=np.int64))
    return frame


def terminals_within_radius(
    customers: pd.DataFrame, terminals: pd.DataFrame, radius: float
) -> list[list[int]]:
    """For each customer, the ids of terminals strictly closer than ``radius``, ascending."""
    import numpy as np

    xy_terminals = terminals[["x_terminal_id", "y_terminal_id"]].to_numpy(dtype=float)
    xy_customers = customers[["x_customer_id", "y_customer_id"]].to_numpy(dtype=float)
    result: list[list[int]] = []
    chunk = 256  # bounds the distance matrix to chunk x n_terminals doubles
    for start in range(0, len(xy_customers), chunk):
        diff = xy_customers[start : start + chunk, None, :] - xy_terminals[None, :, :]
        # Same operations as the handbook (square, sum over x/y, sqrt) so that terminals
        # on the boundary fall on the same side.
        dist = np.sqrt(np.sum(np.square(diff), axis=2))
        result.extend(np.flatnonzero(row < radius).tolist() for row in dist)
    return result


def _generate_block(block: _CustomerBlock) -> tuple[list[int], list[int], list[int], list[float]]:
    """Generate one slice of customers exactly as the handbook does, call for call."""
    import numpy as np

    seconds: list[int] = []
    customer_col: list[int] = []
    terminal_col: list[int] = []
    amount_col: list[float] = []
    n_days = block.n_days
    for i, customer_id in enumerate(block.customer_ids):
        # np.random.seed(c) and random.seed(c) in the handbook: a fresh state per customer.
        rs = np.random.RandomState(customer_id)
        choice = random.Random(customer_id).choice
        poisson, normal, uniform = rs.poisson, rs.normal, rs.uniform
        lam = block.mean_nb_tx_per_day[i]
        mean, std = block.mean_amount[i], block.std_amount[i]
        available = block.terminals[i]
        for day in range(n_days):
            for _ in range(poisson(lam)):
                time_tx = int(normal(43_200, 20_000))
                if 0 < time_tx < SECONDS_PER_DAY:
                    amount = normal(mean, std)
                    if amount < 0:
                        amount = uniform(0, mean * 2)
                    if available:
                        seconds.append(time_tx + day * SECONDS_PER_DAY)
                        customer_col.append(customer_id)
                        terminal_col.append(choice(available))
                        amount_col.append(float(amount))
    return seconds, customer_col, terminal_col, amount_col


def _reference_transactions(
    customers: pd.DataFrame,
    available: list[list[int]],
    n_days: int,
    n_jobs: int | None,
    progress: ProgressCallback | None,
) -> dict[str, NDArray[Any]]:
    import os

    import numpy as np

    n = len(customers)
    workers = n_jobs or max(1, min(os.cpu_count() or 1, 8))
    n_blocks = min(n, max(1, workers * 8))
    bounds = np.linspace(0, n, n_blocks + 1).astype(int)
    blocks = [
        _CustomerBlock(
            customer_ids=customers["CUSTOMER_ID"].iloc[a:b].tolist(),
            mean_amount=customers["mean_amount"].iloc[a:b].tolist(),
            std_amount=customers["std_amount"].iloc[a:b].tolist(),
            mean_nb_tx_per_day=customers["mean_nb_tx_per_day"].iloc[a:b].tolist(),
            terminals=available[a:b],
            n_days=n_days,
        )
        for a, b in pairwise(bounds.tolist())
        if b > a
    ]
    results: list[tuple[list[int], list[int], list[int], list[float]]] = []

    def report(done: int) -> None:
        if progress is not None:
            progress("transactions", done, n)

    report(0)
    if workers == 1:
        for block in blocks:
            results.append(_generate_block(block))
            report(block.customer_ids[-1] + 1)
    else:
        # spawn, not fork: the parent may hold DuckDB/SQLite handles and threads.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for block, result in zip(blocks, pool.map(_generate_block, blocks), strict=True):
                results.append(result)
                report(block.customer_ids[-1] + 1)
    return {
        "seconds": np.fromiter((s for r in results for s in r[0]), dtype=np.int64),
        "customer": np.fromiter((c for r in results for c in r[1]), dtype=np.int64),
        "terminal": np.fromiter((t for r in results for t in r[2]), dtype=np.int64),
        # np.round as the handbook applies it (x * 100, rint, / 100), element for element
        "amount": np.round(np.fromiter((a for r in results for a in r[3]), dtype=float), 2),
    }


def _fast_transactions(
    customers: pd.DataFrame,
    available: list[list[int]],
    n_days: int,
    seed: int,
    progress: ProgressCallback | None,
) -> dict[str, NDArray[Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(customers)
    lam = customers["mean_nb_tx_per_day"].to_numpy()
    counts = rng.poisson(lam[:, None], size=(n, n_days))
    cust = np.repeat(np.repeat(np.arange(n), n_days), counts.ravel())
    day = np.repeat(np.tile(np.arange(n_days), n), counts.ravel())
    times = rng.normal(43_200, 20_000, size=len(cust)).astype(np.int64)
    n_terms = np.array([len(a) for a in available], dtype=np.int64)
    keep = (times > 0) & (times < SECONDS_PER_DAY) & (n_terms[cust] > 0)
    cust, day, times = cust[keep], day[keep], times[keep]
    mean = customers["mean_amount"].to_numpy()[cust]
    amount = rng.normal(mean, mean / 2)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    offsets = np.concatenate([[0], np.cumsum(n_terms)])
    flat_terminals = np.fromiter((t for a in available for t in a), dtype=np.int64)
    pick = (rng.random(len(cust)) * n_terms[cust]).astype(np.int64)
    terminal = flat_terminals[offsets[cust] + pick]
    if progress is not None:
        progress("transactions", n, n)
    return {
        "seconds": times + day * SECONDS_PER_DAY,
        "customer": cust.astype(np.int64),
        "terminal": terminal,
        "amount": np.round(amount, 2),
    }


def _assemble(columns: dict[str, NDArray[Any]], start_date: str) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    seconds = columns["seconds"]
    start = np.datetime64(start_date, "ns")
    frame = pd.DataFrame(
        {
            "TX_DATETIME": start + seconds.astype("timedelta64[s]").astype("timedelta64[ns]"),
            "CUSTOMER_ID": columns["customer"],
            "TERMINAL_ID": columns["terminal"],
            "TX_AMOUNT": columns["amount"],
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": seconds // SECONDS_PER_DAY,
        }
    )
    # pandas' default (unstable) sort on the datetime column, as published: tie order among
    # equal timestamps decides TRANSACTION_IDs and the scenario-3 draws (FRAUD_PROTOCOL.md).
    frame = frame.sort_values("TX_DATETIME").reset_index(drop=True)
    frame.insert(0, "TRANSACTION_ID", np.arange(len(frame), dtype=np.int64))
    frame["TX_FRAUD"] = np.zeros(len(frame), dtype=np.int8)
    frame["TX_FRAUD_SCENARIO"] = np.zeros(len(frame), dtype=np.int8)
    return frame


def add_frauds(
    customers: pd.DataFrame,
    terminals: pd.DataFrame,
    transactions: pd.DataFrame,
    progress: ProgressCallback | None = None,
) -> None:
    """Label frauds in place with the handbook's three scenarios, in the handbook's order.

    1. every amount above 220; 2. each day two terminals are compromised for 28 days;
    3. each day three customers are compromised for 14 days, a third of their transactions
    get 5 times the amount. Relies on ``transactions`` being sorted by time (as built).
    """
    import numpy as np

    amount = transactions["TX_AMOUNT"].to_numpy(copy=True)
    fraud = transactions["TX_FRAUD"].to_numpy(copy=True)
    scenario = transactions["TX_FRAUD_SCENARIO"].to_numpy(copy=True)
    days = transactions["TX_TIME_DAYS"].to_numpy()
    terminal = transactions["TERMINAL_ID"].to_numpy()
    customer = transactions["CUSTOMER_ID"].to_numpy()
    if len(days) and np.any(np.diff(days) < 0):
        raise ValueError("add_frauds needs transactions sorted by TX_DATETIME")

    high = amount > 220
    fraud[high], scenario[high] = 1, 1

    n_fraud_days = int(days.max()) if len(days) else 0

    def day_slice(first: int, length: int) -> slice:
        lo, hi = np.searchsorted(days, [first, first + length], side="left")
        return slice(int(lo), int(hi))

    for day in range(n_fraud_days):
        compromised = terminals["TERMINAL_ID"].sample(n=2, random_state=day).to_numpy()
        window = day_slice(day, 28)
        hit = window.start + np.flatnonzero(np.isin(terminal[window], compromised))
        fraud[hit], scenario[hit] = 1, 2
        if progress is not None:
            progress("frauds", day + 1, 2 * n_fraud_days)

    for day in range(n_fraud_days):
        compromised = customers["CUSTOMER_ID"].sample(n=3, random_state=day).to_numpy()
        window = day_slice(day, 14)
        candidates = window.start + np.flatnonzero(np.isin(customer[window], compromised))
        # random.seed(day); random.sample(list(index), k=n // 3) in the handbook
        chosen = _sample_positions(candidates.tolist(), len(candidates) // 3, seed=day)
        amount[chosen] = amount[chosen] * 5
        fraud[chosen], scenario[chosen] = 1, 3
        if progress is not None:
            progress("frauds", n_fraud_days + day + 1, 2 * n_fraud_days)

    transactions["TX_AMOUNT"] = amount
    transactions["TX_FRAUD"] = fraud
    transactions["TX_FRAUD_SCENARIO"] = scenario


def _sample_positions(population: Sequence[int], k: int, seed: int) -> list[int]:
    return random.Random(seed).sample(list(population), k=k)


def simulate_fraud_dataset(
    workspace: Workspace,
    simulator: FraudSimulator | None = None,
    name: str = "fraud",
    progress: ProgressCallback | None = None,
) -> Dataset:
    """Simulate the fraud data set and register it in ``workspace`` as daily Parquet.

    Example::

        ws = Workspace.init("demo")
        ds = simulate_fraud_dataset(ws)          # reference mode, 1,754,155 rows
        print(ds.version, ds.n_rows, ds.n_positives)
    """
    from shipyard.data.catalog import write_dataset

    simulator = simulator if simulator is not None else FraudSimulator()
    data = simulator.simulate(progress=progress)
    customers = data.customers.drop(columns=["nb_terminals"])
    return write_dataset(
        workspace,
        name,
        data.transactions,
        time_column="TX_DATETIME",
        label_column="TX_FRAUD",
        side_tables={"customers": customers, "terminals": data.terminals},
        params={"generator": "shipyard.data.FraudSimulator", **simulator.get_params()},
        progress=progress,
    )
