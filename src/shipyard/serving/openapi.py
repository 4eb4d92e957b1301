"""The OpenAPI document of the serving app (KServe V2, MLflow scoring, health, admin)."""

from __future__ import annotations

from typing import Any


def document(endpoint: str, features: list[str], *, text: bool = False) -> dict[str, Any]:
    """OpenAPI 3.0 for one endpoint whose model takes ``features`` (strings when ``text``)."""
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    errors = {
        str(code): {"description": text, "content": {"application/json": {"schema": error}}}
        for code, text in (
            (400, "malformed request"),
            (401, "token required"),
            (404, "unknown model or version"),
            (413, "payload too large"),
            (422, "request does not match the model's schema"),
            (503, "not ready or timed out"),
        )
    }

    def ok(schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
            **errors,
        }

    v2_request = _v2_request(text)
    mlflow_request = _mlflow_request(features, text)
    simple = {"type": "object"}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"Shipyard endpoint {endpoint}", "version": "1"},
        "paths": {
            "/v2/health/live": {"get": {"responses": ok(simple)}},
            "/v2/health/ready": {"get": {"responses": ok(simple)}},
            f"/v2/models/{endpoint}": {"get": {"responses": ok(simple)}},
            f"/v2/models/{endpoint}/ready": {"get": {"responses": ok(simple)}},
            f"/v2/models/{endpoint}/infer": {
                "post": {
                    "parameters": [_EVENT_TIME_HEADER, _EXPLAIN_QUERY],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": v2_request}},
                    },
                    "responses": ok(simple),
                }
            },
            "/invocations": {
                "post": {
                    "parameters": [_EVENT_TIME_HEADER, _EXPLAIN_QUERY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": mlflow_request},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": ok(
                        {
                            "type": "object",
                            "properties": {
                                "predictions": {"type": "array"},
                                **_EXPLAINED,
                            },
                        }
                    ),
                }
            },
            "/metrics": {
                "get": {
                    "responses": {
                        "200": {
                            "description": "Prometheus metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    }
                }
            },
        },
    }


_EVENT_TIME_HEADER: dict[str, Any] = {
    "name": "X-Event-Time",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The request's own time (epoch seconds or ISO 8601, naive = UTC), logged as "
    "event_time so monitoring windows follow the traffic's time (a replay, a backfill).",
}


_EXPLAIN_QUERY: dict[str, Any] = {
    "name": "explain",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["true", "false"]},
    "description": "true: answer and log, per row, the feature attributions (exact TreeSHAP "
    "of the native model for LightGBM and XGBoost) and the reason codes (the features pushing "
    "toward label 1, with readable names and the request's values). 422 for a version that "
    "cannot be explained.",
}

_REASON = {
    "type": "object",
    "properties": {
        "feature": {"type": "string"},
        "description": {"type": "string"},
        "value": {"type": "number", "nullable": True},
        "contribution": {"type": "number"},
    },
}
_EXPLAINED: dict[str, Any] = {
    "explanation_features": {"type": "array", "items": {"type": "string"}},
    "output_space": {"type": "string", "enum": ["log-odds", "probability"]},
    "explanations": {
        "type": "array",
        "description": "One per row (explain=true): base_value + sum(attributions) is the "
        "model's raw output in output_space",
        "items": {
            "type": "object",
            "properties": {
                "base_value": {"type": "number"},
                "attributions": {"type": "array", "items": {"type": "number"}},
                "reasons": {"type": "array", "items": _REASON},
            },
        },
    },
}
"""What an explain=true answer adds (the MLflow body; the V2 response's parameters)."""


def _v2_request(text: bool = False) -> dict[str, Any]:
    """The body of a V2 inference request (``BYTES`` tensors of UTF-8 text when ``text``)."""
    datatypes = ["BYTES"] if text else ["FP64", "FP32", "INT64", "INT32", "BOOL"]
    data: dict[str, Any] = {"type": "array"}
    if text:
        data["items"] = {"type": "string"}
    return {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "properties": {
                    "event_time": {"oneOf": [{"type": "number"}, {"type": "string"}]},
                    "explain": {"type": "boolean"},
                },
                "description": "event_time: the request's own time (epoch seconds or ISO 8601, "
                "naive = UTC), logged for monitoring windows; wins over X-Event-Time. "
                "explain: true answers attributions and reason codes per row in the "
                "response's parameters (explanations) and logs them; wins over ?explain=",
            },
            "inputs": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype", "data"],
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "datatype": {
                            "type": "string",
                            "enum": datatypes,
                        },
                        "data": data,
                    },
                },
            },
        },
    }


def _mlflow_request(features: list[str], text: bool = False) -> dict[str, Any]:
    """The four JSON forms MLflow's /invocations takes (values are texts when ``text``)."""
    number = {"type": "string", "minLength": 1} if text else {"type": "number"}
    row_object = {
        "type": "object",
        "properties": dict.fromkeys(features, number),
        "required": features,
        "additionalProperties": False,
    }
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["dataframe_split"],
                "properties": {
                    "dataframe_split": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "columns": {
                                "type": "array",
                                "items": {"type": "string", "enum": features},
                            },
                            "data": {"type": "array", "items": {"type": "array", "items": number}},
                        },
                    }
                },
            },
            {
                "type": "object",
                "required": ["dataframe_records"],
                "properties": {
                    "dataframe_records": {"type": "array", "minItems": 1, "items": row_object}
                },
            },
            {
                "type": "object",
                "required": ["instances"],
                "properties": {"instances": {"type": "array", "minItems": 1, "items": row_object}},
            },
            {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "array",
                            "items": number,
                            "minItems": len(features),
                            "maxItems": len(features),
                        },
                    }
                },
            },
        ]
    }
