"""Admin routes of a serving worker: see and change the traffic policy, roll it back, reload.

Admin routes answer only requests carrying the admin token (``Authorization: Bearer
<token>``); with no token configured they are refused with 403, so a server is never
administrable by whoever reaches its port. Set ``serving_admin_token`` in
``shipyard.toml`` or ``SHIPYARD_SERVING_ADMIN_TOKEN`` in the environment before
``shipyard serve`` to enable them. The ``shipyard endpoint`` commands need no token: they
change the policy in the metadata database, which every worker polls.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from typing import TYPE_CHECKING, Any

import msgspec

from shipyard.errors import RequestError, ShipyardError

if TYPE_CHECKING:
    from shipyard.serving.policy import TrafficPolicy
    from shipyard.serving.runtime import EndpointRuntime

ADMIN_DISABLED = (
    "admin routes are disabled: no admin token is configured. Set serving_admin_token in "
    "shipyard.toml or SHIPYARD_SERVING_ADMIN_TOKEN in the environment and restart "
    "`shipyard serve`, then send Authorization: Bearer <token>; or use `shipyard endpoint` "
    "(set-traffic, rollback, status), which works through the database"
)


def authorize(headers: dict[bytes, bytes], token: str | None, *, admin: bool = False) -> None:
    """Raise RequestError 401 unless the request carries ``token`` (403 for admin without one)."""
    if token is None:
        if admin:
            raise RequestError(403, ADMIN_DISABLED)
        return
    if not hmac.compare_digest(headers.get(b"authorization", b""), f"Bearer {token}".encode()):
        raise RequestError(401, "missing or wrong bearer token (Authorization: Bearer <token>)")


def traffic_status(runtime: EndpointRuntime) -> dict[str, Any]:
    """What this worker serves: policy revision, traffic, each version's backend."""
    state = runtime.state
    if state is None:
        return {"ready": False}
    return {
        "endpoint": runtime.config.endpoint,
        "model": state.policy.model,
        "revision": state.policy.revision,
        "traffic": state.policy.describe(),
        "worker": os.getpid(),
        "versions": {
            str(v): {"backend": d.report.chosen, "note": d.report.note}
            for v, d in state.deployments.items()
        },
    }


async def change_traffic(runtime: EndpointRuntime, path: str, body: bytes) -> dict[str, Any]:
    """Set the traffic policy (``/admin/traffic``) or roll it back; then load it here."""
    from shipyard.serving.policy import apply_policy, get_policy, rollback_policy

    change = _decode(body)
    reason = str(change.get("reason") or "")
    if not reason:
        raise RequestError(422, "reason: required (why the traffic changes)")
    actor = str(change.get("actor") or "admin-api")
    workspace, endpoint = runtime.workspace, runtime.config.endpoint
    try:
        if path == "/admin/rollback":
            await asyncio.to_thread(
                rollback_policy, workspace, endpoint, reason=reason, actor=actor
            )
        else:
            current = await asyncio.to_thread(get_policy, workspace, endpoint)
            policy = _requested_policy(change, endpoint, current.model)
            await asyncio.to_thread(apply_policy, workspace, policy, reason=reason, actor=actor)
    except RequestError:
        raise
    except (KeyError, TypeError, ValueError, ShipyardError) as exc:
        raise RequestError(422, f"traffic change refused: {exc}") from None
    await runtime.reload()
    return traffic_status(runtime)


def _requested_policy(change: dict[str, Any], endpoint: str, model: str) -> TrafficPolicy:
    from shipyard.serving.policy import Arm, TrafficPolicy

    arms = change.get("arms")
    if not isinstance(arms, list) or not arms:
        raise RequestError(422, 'arms: expected [{"version": 1, "weight": 90}, ...]')
    sticky_key = change.get("sticky_key")
    return TrafficPolicy(
        endpoint,
        model,
        tuple(Arm(int(a["version"]), float(a.get("weight", 1))) for a in arms),
        tuple(int(v) for v in change.get("shadows") or ()),
        str(sticky_key) if sticky_key else None,
    )


def _decode(body: bytes) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(body or b"{}")
    except msgspec.DecodeError as exc:
        raise RequestError(400, f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RequestError(422, "expected a JSON object")
    return value
