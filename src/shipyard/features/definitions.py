"""Feature definitions as code: views of features over one entity, versioned by content hash.

A :class:`FeatureView` names an entity (its join key), a timestamp column and a source data
set, and holds features of two kinds:

* :class:`RowFeature` — a SQL expression over the columns of the row itself;
* :class:`Aggregation` — an aggregate over the entity's rows in a time window that ends at
  the row's time, optionally shifted into the past by a ``delay`` (labels that are not yet
  known at time t): the window is ``(t - delay - window, t - delay]``. With no delay the
  row itself and every row at the same instant are included: features use data *at or
  before* t, never after. ``past_only`` makes the window ``(t - window, t)``: the entity's
  history before the row's instant (what a z-score of the row against its past needs);
* :class:`Derived` — a fixed arithmetic combination (ratio, z-score, difference) of earlier
  features of the same view and of source columns, computed row by row after them.

The definition hash covers everything that changes values, so a stored materialization is
reused only while its definition is unchanged.

Example::

    >>> from datetime import timedelta
    >>> view = FeatureView(
    ...     name="customer_spending", entity="CUSTOMER_ID", timestamp="TX_DATETIME",
    ...     source="fraud",
    ...     features=(Aggregation("NB_TX_7D", "count", timedelta(days=7)),),
    ... )
    >>> len(view.definition_hash)
    64
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from shipyard.errors import FeatureDefinitionError
from shipyard.types import COUNT, Constraint

AggregationFunction = Literal["count", "sum", "mean", "min", "max", "std"]
_FUNCTIONS = ("count", "sum", "mean", "min", "max", "std")
DerivedFunction = Literal["ratio", "zscore", "difference"]
_DERIVED_ARITY = {"ratio": 2, "zscore": 3, "difference": 2}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_identifier(kind: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise FeatureDefinitionError(
            f"{kind} must be an identifier (letters, digits, '_', not starting with a digit). "
            f"Got {value!r} instead."
        )


@dataclass(frozen=True)
class RowFeature:
    """A feature computed from the row itself with a DuckDB SQL expression.

    ``inputs`` lists the source columns the expression reads; they are checked against the
    source schema before anything runs.
    """

    name: str
    expression: str
    inputs: tuple[str, ...]
    description: str = ""
    constraint: Constraint | None = None
    """What values are possible (a flag is 0/1); serving rejects the rest. Not in the hash."""

    def __post_init__(self) -> None:
        _check_identifier("RowFeature.name", self.name)
        for column in self.inputs:
            _check_identifier(f"RowFeature {self.name!r} input", column)

    @property
    def columns(self) -> tuple[str, ...]:
        """Source columns this feature reads."""
        return self.inputs

    @property
    def declared_constraint(self) -> Constraint | None:
        """The declared constraint, if any."""
        return self.constraint

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-serializable form (what the definition hash covers)."""
        return {
            "kind": "row",
            "name": self.name,
            "expression": self.expression,
            "inputs": list(self.inputs),
        }


@dataclass(frozen=True)
class Aggregation:
    """An aggregate of ``column`` over the entity's rows in ``(t - delay - window, t - delay]``.

    ``function`` is one of count, sum, mean, min, max, std (``count`` needs no column;
    ``std`` is the population standard deviation and needs ``decimals``, so that it is
    computed from exact integer sums).
    ``fill_value`` replaces the result of an empty window (count is 0 by itself).
    ``decimals`` sums the column as an exact fixed-point decimal: a feature then cannot
    depend on other rows through floating-point rounding.
    ``past_only`` excludes the row's own instant: the window is ``(t - window, t)``, the
    entity's history before the row (only without a delay, which excludes it already).
    """

    name: str
    function: AggregationFunction
    window: timedelta
    column: str | None = None
    delay: timedelta = field(default_factory=timedelta)
    fill_value: float | None = None
    decimals: int | None = None
    description: str = ""
    constraint: Constraint | None = None
    """What values are possible; a count is a non-negative integer without saying. Not hashed."""
    past_only: bool = False

    def __post_init__(self) -> None:
        _check_identifier("Aggregation.name", self.name)
        if self.function not in _FUNCTIONS:
            raise FeatureDefinitionError(
                f"Aggregation {self.name!r}: function must be one of {', '.join(_FUNCTIONS)}. "
                f"Got {self.function!r} instead."
            )
        if self.function != "count" and self.column is None:
            raise FeatureDefinitionError(
                f"Aggregation {self.name!r}: function {self.function!r} needs a column."
            )
        if self.column is not None:
            _check_identifier(f"Aggregation {self.name!r} column", self.column)
        if not isinstance(self.window, timedelta) or self.window <= timedelta(0):
            raise FeatureDefinitionError(
                f"Aggregation {self.name!r}: window must be a positive timedelta. "
                f"Got {self.window!r} instead."
            )
        if not isinstance(self.delay, timedelta) or self.delay < timedelta(0):
            raise FeatureDefinitionError(
                f"Aggregation {self.name!r}: delay must be a timedelta >= 0. Got {self.delay!r}."
            )
        if self.decimals is not None and not 0 <= self.decimals <= 9:
            raise FeatureDefinitionError(
                f"Aggregation {self.name!r}: decimals must be an int in [0, 9]. "
                f"Got {self.decimals!r} instead."
            )
        if self.function == "std" and self.decimals is None:
            raise FeatureDefinitionError(
                f"Aggregation {self.name!r}: function 'std' needs decimals (it is computed "
                "from exact integer sums)."
            )
        if not isinstance(self.past_only, bool):
            raise FeatureDefinitionError(
                f"Aggregation {self.name!r}: past_only must be a bool. Got {self.past_only!r}."
            )
        if self.past_only and self.delay > timedelta(0):
            raise FeatureDefinitionError(
                f"Aggregation {self.name!r}: past_only needs no delay (a delayed window "
                "already ends before the row)."
            )

    @property
    def columns(self) -> tuple[str, ...]:
        """Source columns this feature reads."""
        return () if self.column is None else (self.column,)

    @property
    def declared_constraint(self) -> Constraint | None:
        """The declared constraint; counts are non-negative integers by definition."""
        if self.constraint is None and self.function == "count":
            return COUNT
        return self.constraint

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-serializable form (what the definition hash covers)."""
        return {
            "kind": "aggregation",
            "name": self.name,
            "function": self.function,
            "column": self.column,
            "window_us": micros(self.window),
            "delay_us": micros(self.delay),
            "fill_value": self.fill_value,
            "decimals": self.decimals,
            # only when set, so that the hashes of existing definitions do not change
            **({"past_only": True} if self.past_only else {}),
        }


@dataclass(frozen=True)
class Derived:
    """A row-wise combination of earlier features of the view and of source columns.

    ``function`` and its ``inputs`` (names, in order):

    * ``ratio``: ``inputs[0] / inputs[1]``;
    * ``zscore``: ``(inputs[0] - inputs[1]) / inputs[2]`` (a value, a mean, a std);
    * ``difference``: ``inputs[0] - inputs[1]``.

    The result is null (``fill_value`` if given) when an input is null or a divisor is 0.
    Each input is a feature defined *earlier* in the same view or, failing that, a column of
    the source data set. Computed in IEEE double precision, the same offline and online.
    """

    name: str
    function: DerivedFunction
    inputs: tuple[str, ...]
    fill_value: float | None = None
    description: str = ""
    constraint: Constraint | None = None
    """What values are possible; serving rejects the rest. Not in the hash."""

    def __post_init__(self) -> None:
        _check_identifier("Derived.name", self.name)
        arity = _DERIVED_ARITY.get(self.function)
        if arity is None:
            raise FeatureDefinitionError(
                f"Derived {self.name!r}: function must be one of {', '.join(_DERIVED_ARITY)}. "
                f"Got {self.function!r} instead."
            )
        if not isinstance(self.inputs, tuple) or len(self.inputs) != arity:
            raise FeatureDefinitionError(
                f"Derived {self.name!r}: {self.function} takes {arity} inputs. "
                f"Got {self.inputs!r} instead."
            )
        for name in self.inputs:
            _check_identifier(f"Derived {self.name!r} input", name)

    @property
    def columns(self) -> tuple[str, ...]:
        """Names this feature reads (features of its view or source columns)."""
        return self.inputs

    @property
    def declared_constraint(self) -> Constraint | None:
        """The declared constraint, if any."""
        return self.constraint

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-serializable form (what the definition hash covers)."""
        return {
            "kind": "derived",
            "name": self.name,
            "function": self.function,
            "inputs": list(self.inputs),
            "fill_value": self.fill_value,
        }


Feature = RowFeature | Aggregation | Derived


def micros(value: timedelta) -> int:
    """A timedelta as an integer number of microseconds (exact)."""
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


@dataclass(frozen=True)
class FeatureView:
    """Features of one entity, computed point-in-time correct from one source data set."""

    name: str
    entity: str
    timestamp: str
    source: str
    features: tuple[Feature, ...]
    description: str = ""

    def __post_init__(self) -> None:
        _check_identifier("FeatureView.name", self.name)
        _check_identifier(f"FeatureView {self.name!r} entity", self.entity)
        _check_identifier(f"FeatureView {self.name!r} timestamp", self.timestamp)
        if not self.features:
            raise FeatureDefinitionError(f"FeatureView {self.name!r} defines no features.")
        names = [f.name for f in self.features]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise FeatureDefinitionError(
                f"FeatureView {self.name!r} defines {', '.join(duplicates)} more than once."
            )
        clash = {self.entity, self.timestamp} & set(names)
        if clash:
            raise FeatureDefinitionError(
                f"FeatureView {self.name!r}: feature name {sorted(clash)[0]!r} collides with "
                "the entity or timestamp column."
            )
        for position, feature in enumerate(self.features):
            later = set(names[position:])
            if isinstance(feature, Derived) and later & set(feature.inputs):
                raise FeatureDefinitionError(
                    f"FeatureView {self.name!r}: derived feature {feature.name!r} reads "
                    f"{sorted(later & set(feature.inputs))[0]!r}, which is not defined before "
                    "it (a derived feature reads earlier features or source columns)."
                )

    @property
    def feature_names(self) -> list[str]:
        """Names of the features, in definition order."""
        return [f.name for f in self.features]

    @property
    def delayed(self) -> bool:
        """Whether an aggregation has a delay (label-based: online, fed only from history)."""
        return any(isinstance(f, Aggregation) and f.delay > timedelta(0) for f in self.features)

    def constraints(self) -> dict[str, Constraint]:
        """``{feature name: constraint}`` for every feature that declares one."""
        return {f.name: c for f in self.features if (c := f.declared_constraint) is not None}

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-serializable form of the whole definition."""
        return {
            "name": self.name,
            "entity": self.entity,
            "timestamp": self.timestamp,
            "source": self.source,
            "features": [f.to_dict() for f in self.features],
        }

    @property
    def definition_hash(self) -> str:
        """SHA-256 of the canonical definition: changes whenever a value could change."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def source_columns(self, feature: Feature) -> tuple[str, ...]:
        """The source columns ``feature`` reads (a derived feature's inputs that are not
        features of this view)."""
        if isinstance(feature, Derived):
            own = set(self.feature_names)
            return tuple(c for c in feature.inputs if c not in own)
        return feature.columns

    def check_columns(self, available: Iterable[str], where: str) -> None:
        """Raise FeatureDefinitionError naming the first column missing from ``available``."""
        have = set(available)
        needed: list[tuple[str, str]] = [("entity", self.entity), ("timestamp", self.timestamp)]
        needed += [
            (f"feature {f.name!r}", c) for f in self.features for c in self.source_columns(f)
        ]
        for role, column in needed:
            if column not in have:
                raise FeatureDefinitionError(
                    f"FeatureView {self.name!r}: {role} needs column {column!r}, which {where} "
                    f"does not have. Available: {', '.join(sorted(have))}."
                )


def view_constraints(views: Sequence[FeatureView]) -> dict[str, Constraint]:
    """The declared constraints of every feature of ``views`` (what a model's schema carries)."""
    return {name: c for view in views for name, c in view.constraints().items()}


def definitions_hash(views: Sequence[FeatureView]) -> str:
    """One hash for a set of views (what a training run records as its feature version)."""
    joined = ",".join(sorted(f"{v.name}:{v.definition_hash}" for v in views))
    return hashlib.sha256(joined.encode()).hexdigest()


def load_views(reference: str) -> list[FeatureView]:
    """Import feature views from ``module:attribute`` (a FeatureView or a sequence of them).

    Example: ``load_views("shipyard.features.fraud:BASELINE_VIEWS")``.
    """
    module_name, _, attribute = reference.partition(":")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise FeatureDefinitionError(
            f"Cannot load feature views {reference!r} (expected module:attribute): {exc}"
        ) from None
    views = [value] if isinstance(value, FeatureView) else list(value)
    for view in views:
        if not isinstance(view, FeatureView):
            raise FeatureDefinitionError(
                f"{reference} holds {type(view).__name__}, not a FeatureView"
            )
    return views
