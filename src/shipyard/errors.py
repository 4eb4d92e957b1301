"""One exception hierarchy for Shipyard.

Every error derives from :class:`ShipyardError` and also from the built-in exception it
refines, so ordinary ``except ValueError`` / ``except KeyError`` clauses keep working::

    try:
        ws = Workspace.open("missing/")
    except FileNotFoundError as exc:  # WorkspaceNotFoundError is a FileNotFoundError
        print(exc)
"""

from __future__ import annotations


class ShipyardError(Exception):
    """Base class of every error Shipyard raises on purpose."""


class ConfigError(ShipyardError, ValueError):
    """A setting is unknown, malformed or out of range."""


class WorkspaceNotFoundError(ShipyardError, FileNotFoundError):
    """No Shipyard workspace (a folder with ``shipyard.toml``) was found where one was expected."""


class WorkspaceExistsError(ShipyardError, FileExistsError):
    """``shipyard init`` was asked to create a workspace where one already exists."""


class WorkspaceOutdatedError(ShipyardError, RuntimeError):
    """The workspace's metadata tables were made by an earlier Shipyard and lack columns."""


class DatasetNotFoundError(ShipyardError, KeyError):
    """No data set of that name (and version) is registered in the workspace."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DataValidationError(ShipyardError, ValueError):
    """Stored or supplied data does not match what was expected (schema, nulls, corruption)."""


class CorruptDataError(DataValidationError):
    """A stored file cannot be read or its content no longer matches its recorded hash."""


class FeatureDefinitionError(ShipyardError, ValueError):
    """A feature definition is inconsistent with itself or with its source data."""


class FeatureNotFoundError(ShipyardError, KeyError):
    """A requested feature or feature view is not defined or not materialized."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class OnlineStoreUnavailableError(ShipyardError, ConnectionError):
    """The online store cannot be reached (Redis down, wrong URL): no features can be served."""


class OnlineContentionError(ShipyardError, RuntimeError):
    """An online-store update kept losing to other writers of the same entities; nothing
    was written (retry, or spread the writers)."""


class ParameterError(ShipyardError, ValueError):
    """A function or constructor argument is outside its allowed range or type."""


def invalid_parameter(name: str, owner: str, expected: str, got: object) -> ParameterError:
    """Build the one parameter-error message Shipyard uses everywhere.

    Example: ``invalid_parameter("n_days", "FraudSimulator", "an int >= 1", 0)`` reads
    *"The 'n_days' parameter of FraudSimulator must be an int >= 1. Got 0 instead."*
    """
    return ParameterError(
        f"The {name!r} parameter of {owner} must be {expected}. Got {got!r} instead."
    )


class SchemaError(ShipyardError, ValueError):
    """Data or a model does not match the schema it must follow."""


class TrainingError(ShipyardError, ValueError):
    """A model cannot be trained on what it was given (no positives, empty window ...)."""


class ModelNotFoundError(ShipyardError, KeyError):
    """No registered model, version or alias of that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class IntegrityError(ShipyardError, ValueError):
    """An artifact's content does not match its recorded SHA-256; it is not loaded."""


class LeakageError(ShipyardError, ValueError):
    """Features read labels before they are known, the future, or columns not observable."""


class ConcurrentChangeError(ShipyardError, RuntimeError):
    """Someone changed the state between reading it and acting on it (e.g. another worker's
    guardrail already rolled the traffic policy back); read the state again."""


class PromotionRefusedError(ShipyardError, ValueError):
    """A promotion gate refused to replace the champion (worse, not significant, schema)."""


class RequestError(ShipyardError, ValueError):
    """A serving request the server refuses; ``status`` is the HTTP status it answers with.

    Example: ``RequestError(422, "input 'TX_AMOUNT' (row 0) must be a number >= 0; got -5")``.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ExperimentNotFoundError(ShipyardError, KeyError):
    """No experiment of that name in the workspace."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ExperimentConflictError(ShipyardError, ValueError):
    """The experiment cannot start or stop as asked (another one runs on the endpoint, the
    name is taken, it is already stopped)."""


class PipelineError(ParameterError):
    """A pipeline's graph is invalid (duplicate or unknown steps, a cycle, parameters that are
    not JSON), its import path cannot be loaded, or a run cannot go on as asked."""


class PipelineBusyError(ConcurrentChangeError):
    """Another run of the pipeline is unfinished (running or waiting); ``run_id`` names it."""

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunNotFoundError(ShipyardError, KeyError):
    """No pipeline run of that id is stored in the workspace."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
