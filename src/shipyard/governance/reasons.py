"""Reason codes: the features that pushed one decision toward the adverse outcome.

A lender that declines an application must say why. :func:`reasons` reads an
:class:`~shipyard.governance.explain.Explanation` and returns, per row, the ``top_k``
features whose attribution pushed the output toward label 1 (default, fraud: the adverse
outcome), largest push first, each with a readable name (the feature's description in its
:class:`~shipyard.features.definitions.FeatureView`, else its column name) and the
applicant's own value. Ties are broken by the model's feature order, so the same row
always gets the same reasons. Offline and in serving (``explain=true``) alike.

Example::

    explanation = explain(model, applications)
    for row in reasons(explanation, descriptions=feature_descriptions(VIEWS)):
        print([r.description for r in row])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import invalid_parameter

if TYPE_CHECKING:
    from shipyard.features.definitions import FeatureView
    from shipyard.governance.explain import Explanation

DEFAULT_TOP_K = 4
"""How many reasons a decision gets unless asked otherwise (US adverse-action notices give
up to four)."""


@dataclass(frozen=True)
class Reason:
    """One feature that pushed a decision toward the adverse outcome, and by how much."""

    feature: str
    """The model's column name."""
    description: str
    """What a person reads: the feature's description, else its column name."""
    value: float
    """The applicant's value of the feature (NaN when missing)."""
    contribution: float
    """Its attribution (> 0), in the explanation's output space (log-odds or probability)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (a missing value is ``null``)."""
        return {
            "feature": self.feature,
            "description": self.description,
            "value": None if math.isnan(self.value) else self.value,
            "contribution": self.contribution,
        }


def feature_descriptions(views: Sequence[FeatureView] | str) -> dict[str, str]:
    """Readable names of the features of ``views`` (FeatureViews or ``module:attribute``):
    each feature's description where it has one, else its column name."""
    from shipyard.features.definitions import load_views

    loaded = load_views(views) if isinstance(views, str) else list(views)
    return {
        feature.name: feature.description or feature.name
        for view in loaded
        for feature in view.features
    }


def reasons(
    explanation: Explanation,
    *,
    top_k: int = DEFAULT_TOP_K,
    descriptions: Mapping[str, str] | None = None,
) -> list[tuple[Reason, ...]]:
    """Per row, up to ``top_k`` features pushing toward label 1, largest push first.

    A row whose every attribution is ≤ 0 gets no reason (nothing pushed it toward the
    adverse outcome). ``descriptions`` maps column names to readable names (see
    :func:`feature_descriptions`); a column without one reads as its name.
    """
    import numpy as np

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise invalid_parameter("top_k", "reasons", "an int >= 1", top_k)
    names = explanation.features
    readable = [(descriptions or {}).get(name) or name for name in names]
    values = explanation.values
    data = explanation.data
    # stable sort of -contribution: equal pushes keep the model's feature order
    order = np.argsort(-values, axis=1, kind="stable")[:, :top_k]
    out: list[tuple[Reason, ...]] = []
    for i in range(len(values)):
        row = tuple(
            Reason(names[j], readable[j], float(data[i, j]), float(values[i, j]))
            for j in order[i].tolist()
            if values[i, j] > 0
        )
        out.append(row)
    return out


def explanation_records(
    explanation: Explanation,
    *,
    top_k: int = DEFAULT_TOP_K,
    descriptions: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One JSON-ready record per row: base value, attributions in feature order, reasons.

    What a served ``explain=true`` answer and its prediction-log record carry.
    """
    found = reasons(explanation, top_k=top_k, descriptions=descriptions)
    base = explanation.base_value
    return [
        {
            "base_value": base,
            "attributions": attributions,
            "reasons": [reason.to_dict() for reason in row],
        }
        for attributions, row in zip(explanation.values.tolist(), found, strict=True)
    ]
