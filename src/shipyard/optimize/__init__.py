"""``shipyard optimize``: make a registered text classifier faster, with evidence.

Transforms (:mod:`~shipyard.optimize.transforms`, :mod:`~shipyard.optimize.distill`) turn a
``torch-text`` version into an ``onnx-text`` one (:mod:`~shipyard.optimize.formats`);
:mod:`~shipyard.optimize.measure` compares it with the original and times it;
:mod:`~shipyard.optimize.runner` decides, registers or refuses, and
:mod:`~shipyard.optimize.report` writes what it found.

Example::

    from shipyard.optimize import optimize
    result = optimize(ws, "sentiment", 3, transforms=["onnx", "dynamic-int8"], out=Path("opt"))
    print(result.summary())
"""

from shipyard.optimize.report import OptimizeResult, Outcome, TransformReport
from shipyard.optimize.runner import TARGET_ORDER, TRANSFORMS, Settings, optimize

__all__ = [
    "TARGET_ORDER",
    "TRANSFORMS",
    "OptimizeResult",
    "Outcome",
    "Settings",
    "TransformReport",
    "optimize",
]
