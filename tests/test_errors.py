from __future__ import annotations

import pytest

from shipyard import errors


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.ConfigError, ValueError),
        (errors.WorkspaceNotFoundError, FileNotFoundError),
        (errors.WorkspaceExistsError, FileExistsError),
        (errors.DatasetNotFoundError, KeyError),
        (errors.DataValidationError, ValueError),
        (errors.CorruptDataError, ValueError),
        (errors.FeatureDefinitionError, ValueError),
        (errors.FeatureNotFoundError, KeyError),
        (errors.ParameterError, ValueError),
        (errors.SchemaError, ValueError),
        (errors.TrainingError, ValueError),
        (errors.ModelNotFoundError, KeyError),
        (errors.IntegrityError, ValueError),
        (errors.PromotionRefusedError, ValueError),
        (errors.ConcurrentChangeError, RuntimeError),
        (errors.ExperimentNotFoundError, KeyError),
        (errors.ExperimentConflictError, ValueError),
        (errors.PipelineError, ValueError),
        (errors.RunNotFoundError, KeyError),
    ],
)
def test_every_error_is_a_shipyard_error_and_the_builtin_it_refines(
    error: type[Exception], builtin: type[Exception]
) -> None:
    with pytest.raises(builtin) as caught:
        raise error("message")
    assert isinstance(caught.value, errors.ShipyardError)


def test_key_errors_print_their_message_without_quotes() -> None:
    assert str(errors.DatasetNotFoundError("No data set 'x'")) == "No data set 'x'"


def test_parameter_message_names_owner_expectation_and_value() -> None:
    err = errors.invalid_parameter("max_wait_ms", "Batcher", "a float in [0, 1000]", -3)
    assert str(err) == (
        "The 'max_wait_ms' parameter of Batcher must be a float in [0, 1000]. Got -3 instead."
    )


def test_request_errors_carry_their_http_status() -> None:
    with pytest.raises(ValueError, match="must be a finite number") as caught:
        raise errors.RequestError(422, "input 'a' (row 0) must be a finite number; got null/NaN")
    assert isinstance(caught.value, errors.ShipyardError)
    assert caught.value.status == 422  # type: ignore[attr-defined]
    assert str(caught.value) == "input 'a' (row 0) must be a finite number; got null/NaN"
