"""Pipelines as step graphs, known and checked before anything runs.

A :class:`Step` is a plain function of a :class:`StepContext` that returns JSON-ready outputs
(a mapping: paths, metrics, model versions; never the data itself) or :class:`Wait` ("not
yet": the run waits and is resumed later). A step names the upstream steps whose outputs it
reads; a :class:`Pipeline` is a name and its steps. :meth:`Pipeline.validate` checks the
graph at one moment (duplicate names, unknown inputs, cycles, parameters that are not JSON)
and names the step's own file and line; :func:`input_hash` is what the step cache is keyed
on: the step's name, version, parameters and upstream outputs.

Example::

    >>> def load(ctx):
    ...     return {"rows": 3}
    >>> def train(ctx):
    ...     return {"auc": 0.5 + ctx.upstream["load"]["rows"] / 100}
    >>> pipe = Pipeline("demo", (Step("load", load), Step("train", train, inputs=("load",))))
    >>> pipe.validate()
    >>> [step.name for step in pipe.order()]
    ['load', 'train']

Pipelines are found by import path, ``"package.module:factory"``, where ``factory(**params)``
returns a Pipeline (see :func:`load_pipeline`): that is how the CLI and the triggers name them.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from shipyard.errors import ParameterError, PipelineError

if TYPE_CHECKING:
    from shipyard.workspace import Workspace

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def canonical_json(value: Any) -> str:
    """The one JSON text of ``value`` that hashes are computed on (sorted keys, no spaces).

    Raises TypeError or ValueError for values JSON cannot hold (objects, NaN, infinity).
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Wait:
    """What a step returns when it cannot finish yet (e.g. a canary step without enough
    guardrail data): the run becomes "waiting" with this reason and is resumed later."""

    reason: str
    retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ParameterError(
                f"The 'reason' parameter of Wait must be a non-empty string. "
                f"Got {self.reason!r} instead."
            )
        retry = self.retry_after_s
        if isinstance(retry, bool) or not isinstance(retry, int | float) or not retry >= 0:
            raise ParameterError(
                f"The 'retry_after_s' parameter of Wait must be a number of seconds >= 0. "
                f"Got {retry!r} instead."
            )


@dataclass
class StepContext:
    """What a step function receives: the workspace, its run, its parameters and the outputs
    of the steps it names as inputs. ``ctx.log("...")`` keeps a line in the run's state."""

    workspace: Workspace
    run_id: str
    step: str
    params: Mapping[str, Any]
    upstream: Mapping[str, Mapping[str, Any]]
    messages: list[str] = field(default_factory=list)
    on_log: Callable[[str], None] | None = field(default=None, repr=False)

    def log(self, message: str) -> None:
        """Keep one line in the run's state (``shipyard pipeline status`` shows it)."""
        text = str(message)
        self.messages.append(text)
        if self.on_log is not None:
            self.on_log(text)


StepFunction = Callable[[StepContext], "Mapping[str, Any] | Wait"]


@dataclass(frozen=True, eq=False)
class Step:
    """One node of a pipeline: a function of a StepContext returning JSON-ready outputs.

    ``inputs`` are the upstream steps whose outputs it reads; ``params`` are JSON-ready and
    part of its input hash; with ``cache=True`` a step whose input hash was computed before
    is not run again (its stored outputs are reused); bump ``version`` when its code changes
    what it computes.
    """

    name: str
    fn: StepFunction
    inputs: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    cache: bool = True
    version: str = "1"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            expected = "a name of letters, digits, '_', '.', '-' (not starting with a digit)"
            raise PipelineError(
                f"The 'name' parameter of Step must be {expected}. Got {self.name!r} instead."
            )
        owner = f"Step {self.name!r}"
        if not callable(self.fn):
            raise PipelineError(
                f"The 'fn' parameter of {owner} must be a callable taking a StepContext. "
                f"Got {self.fn!r} instead."
            )
        inputs = (self.inputs,) if isinstance(self.inputs, str) else self.inputs
        if not all(isinstance(name, str) for name in inputs):
            raise PipelineError(
                f"The 'inputs' parameter of {owner} must be a tuple of step names. "
                f"Got {self.inputs!r} instead."
            )
        object.__setattr__(self, "inputs", tuple(inputs))
        if not isinstance(self.params, Mapping):
            raise PipelineError(
                f"The 'params' parameter of {owner} must be a mapping. Got {self.params!r} instead."
            )
        object.__setattr__(self, "params", dict(self.params))
        if not isinstance(self.version, str) or not self.version:
            raise PipelineError(
                f"The 'version' parameter of {owner} must be a non-empty string. "
                f"Got {self.version!r} instead."
            )

    @property
    def where(self) -> str:
        """The file and line where the step's function is defined (for error messages)."""
        try:
            target = inspect.unwrap(self.fn)
            path = inspect.getsourcefile(target)
            _, line = inspect.getsourcelines(target)
        except (TypeError, OSError):
            return f"{getattr(self.fn, '__module__', '?')}.{_qualname(self.fn)}"
        return f"{path}:{line}"

    def describe(self) -> dict[str, Any]:
        """The step as JSON: name, inputs, parameters, cache, version and its function."""
        return {
            "name": self.name,
            "inputs": list(self.inputs),
            "params": dict(self.params),
            "cache": self.cache,
            "version": self.version,
            "fn": f"{getattr(self.fn, '__module__', '?')}:{_qualname(self.fn)}",
        }


def _qualname(fn: object) -> str:
    return str(getattr(fn, "__qualname__", type(fn).__qualname__))


@dataclass(frozen=True, eq=False)
class Pipeline:
    """A named graph of steps; :meth:`validate` checks it before anything runs.

    ``source`` (set by :func:`load_pipeline`) records the import path and parameters the
    pipeline was built from, so a stored run can be resumed from the command line.
    """

    name: str
    steps: tuple[Step, ...]
    source: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))

    def validate(self) -> None:
        """Raise PipelineError naming what is wrong with the graph; None when it is sound."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise PipelineError(
                f"The 'name' parameter of Pipeline must be a non-empty string. "
                f"Got {self.name!r} instead."
            )
        if not self.steps:
            raise PipelineError(f"Pipeline {self.name!r} has no steps; give it at least one.")
        seen: dict[str, Step] = {}
        for step in self.steps:
            if not isinstance(step, Step):
                raise PipelineError(
                    f"Pipeline {self.name!r} must hold Step objects. "
                    f"Got {type(step).__name__} ({step!r}) instead."
                )
            if step.name in seen:
                raise PipelineError(
                    f"Pipeline {self.name!r} has two steps named {step.name!r} "
                    f"({seen[step.name].where} and {step.where}); step names must be unique."
                )
            seen[step.name] = step
        for step in self.steps:
            self._check_step(step, seen)
        cycle = _find_cycle(self.steps)
        if cycle:
            raise PipelineError(
                f"Pipeline {self.name!r} has a cycle: {' -> '.join(cycle)}; "
                "a step cannot depend, directly or not, on itself."
            )

    def _check_step(self, step: Step, known: Mapping[str, Step]) -> None:
        for name in step.inputs:
            if name not in known:
                raise PipelineError(
                    f"Step {step.name!r} of pipeline {self.name!r} ({step.where}) reads "
                    f"input {name!r}, which is not a step of the pipeline "
                    f"(steps: {', '.join(known)})."
                )
        if len(set(step.inputs)) != len(step.inputs):
            raise PipelineError(
                f"Step {step.name!r} of pipeline {self.name!r} names an input twice: "
                f"{list(step.inputs)}."
            )
        for key, value in step.params.items():
            try:
                if not isinstance(key, str):
                    raise TypeError(f"key {key!r} is not a string")
                canonical_json(value)
            except (TypeError, ValueError) as exc:
                raise PipelineError(
                    f"The parameter {key!r} of step {step.name!r} ({step.where}) must be "
                    f"JSON-ready (str, number, bool, None, lists and dicts of them). "
                    f"Got {value!r} instead ({exc})."
                ) from None

    def order(self) -> list[Step]:
        """The steps in an order where every step comes after its inputs; among steps that
        could go next, the one declared first (so the order is stable)."""
        self.validate()
        done: set[str] = set()
        ordered: list[Step] = []
        remaining = list(self.steps)
        while remaining:
            step = next(s for s in remaining if all(i in done for i in s.inputs))
            ordered.append(step)
            done.add(step.name)
            remaining.remove(step)
        return ordered

    def step(self, name: str) -> Step:
        """The step of that name; PipelineError naming the steps there are otherwise."""
        for step in self.steps:
            if step.name == name:
                return step
        names = ", ".join(s.name for s in self.steps)
        raise PipelineError(f"Pipeline {self.name!r} has no step {name!r} (steps: {names}).")

    def describe(self) -> dict[str, Any]:
        """The validated graph as JSON (stored with each run): steps in run order."""
        return {
            "name": self.name,
            "steps": [step.describe() for step in self.order()],
            "source": None if self.source is None else dict(self.source),
        }


def _find_cycle(steps: tuple[Step, ...]) -> list[str]:
    """A cycle's path (first step repeated at the end), or [] when the graph has none."""
    inputs = {step.name: step.inputs for step in steps}
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        path.append(name)
        for upstream in inputs[name]:
            if state.get(upstream) == 1:
                cycle = [*path[path.index(upstream) :], upstream]
                return list(reversed(cycle))  # in data-flow order: a -> b means b reads a
            if upstream not in state:
                found = visit(upstream)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return []

    for step in steps:
        if step.name not in state:
            found = visit(step.name)
            if found:
                return found
    return []


def input_hash(step: Step, upstream: Mapping[str, Mapping[str, Any]]) -> str:
    """SHA-256 of the step's name, version, parameters and its inputs' outputs (canonical
    JSON): equal hashes mean the step would compute from exactly the same things."""
    missing = [name for name in step.inputs if name not in upstream]
    if missing:
        raise PipelineError(
            f"Step {step.name!r} needs the outputs of {missing} to compute its input hash."
        )
    payload = {
        "step": step.name,
        "version": step.version,
        "params": dict(step.params),
        "upstream": {name: upstream[name] for name in step.inputs},
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def load_pipeline(reference: str, **params: Any) -> Pipeline:
    """Build the pipeline named by ``"package.module:factory"`` (``factory(**params)``
    returns a Pipeline; a module-level Pipeline works too, without parameters).

    Example: ``load_pipeline("shipyard.pipelines.examples:demo", rows=100)``.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise PipelineError(
            f"A pipeline is named 'package.module:factory'. Got {reference!r} instead."
        )
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise PipelineError(f"Cannot load pipeline {reference!r}: {exc}") from None
    if isinstance(target, Pipeline):
        if params:
            raise PipelineError(
                f"{reference} is a Pipeline, not a factory: it takes no parameters "
                f"(got {sorted(params)})."
            )
        pipeline = target
    elif callable(target):
        try:
            inspect.signature(target).bind(**params)
        except TypeError as exc:
            raise PipelineError(
                f"Cannot build pipeline {reference!r} with {params}: {exc}"
            ) from None
        pipeline = target(**params)
        if not isinstance(pipeline, Pipeline):
            raise PipelineError(
                f"{reference}(**params) must return a Pipeline. "
                f"Got {type(pipeline).__name__} instead."
            )
    else:
        raise PipelineError(
            f"{reference} must be a Pipeline or a function returning one. "
            f"Got {type(target).__name__} instead."
        )
    try:
        canonical_json(params)
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"The parameters of {reference} must be JSON-ready: {exc}") from None
    pipeline = replace(pipeline, source={"ref": reference, "params": dict(params)})
    pipeline.validate()
    return pipeline
