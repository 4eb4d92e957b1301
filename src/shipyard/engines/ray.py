"""The Ray engine: the same functions as Ray tasks, on a local Ray or a cluster by address.

``fn`` is put in Ray's object store once per :meth:`RayEngine.map` call (whatever it closes
over travels once, not once per item); each item is one task. A task whose worker process
dies is retried by Ray (``max_retries``); a task that raises is not retried, and its original
exception is re-raised in the caller with a note naming the item; the tasks still pending
are cancelled.

:meth:`RayEngine.connect` checks a cluster address before Ray sees it: a malformed or
unreachable ``ray_address`` is a ConfigError naming the setting within seconds, never a
minute of Ray retrying. A local Ray listens on the loopback only, without a dashboard.

Needs the ``ray`` extra (``pip install 'shipyard[ray]'``).

Example::

    engine = RayEngine.connect("10.0.0.5:6379")   # or RayEngine.connect(num_cpus=4)
    squares = engine.map(lambda x: x * x, [1, 2, 3], label="number")
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from shipyard.engines import Describe, Progress, add_item_note, item_name
from shipyard.errors import ConfigError, ParameterError

T = TypeVar("T")
R = TypeVar("R")

CONNECT_TIMEOUT_S = 5.0
"""How long :meth:`RayEngine.connect` waits for a cluster's GCS port to accept a connection."""
LOOPBACK = "127.0.0.1"
_MIB = 1024 * 1024
_CLIENT_SCHEME = "ray://"
_MISSING_MODULE = re.compile(r"No module named '([^']+)'")
_REMOTE: Any = None
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_LOOPBACK_ONLY = False


def _call(fn: Callable[[Any], Any], item: Any) -> tuple[bool, Any, str]:
    """Run one item in a worker; an exception comes back as a value, with its traceback."""
    try:
        return True, fn(item), ""
    except Exception as exc:
        text = traceback.format_exc()
        try:
            import pickle

            pickle.dumps(exc)
        except Exception:  # an exception Ray cannot carry back: keep its type name and text
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        return False, exc, text


def parse_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a ``HOST:PORT`` or ``ray://HOST:PORT`` address (ConfigError if not)."""
    rest = address[len(_CLIENT_SCHEME) :] if address.startswith(_CLIENT_SCHEME) else address
    host, sep, port_text = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or "/" in rest or not port_text.isdigit():
        raise ConfigError(
            f"ray_address = {address!r} is not a Ray address; expected 'HOST:PORT' of the "
            "cluster's head node (e.g. '10.0.0.5:6379'), 'ray://HOST:PORT' for Ray Client, "
            "or unset to start a local Ray."
        )
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"ray_address = {address!r}: port {port} is not in 1..65535.")
    return host, port


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ConfigError naming ``ray_address`` unless its port accepts a TCP connection."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        raise ConfigError(
            f"ray_address = {address!r}: no Ray cluster answers there ({reason} within "
            f"{timeout_s:g} s). Start the head node (`ray start --head --port={port}`), fix "
            "the address, or unset ray_address to start a local Ray."
        ) from None


def _endpoint(host: str, port: int) -> tuple[str, int]:
    """A comparable form of an address: loopback names and IPs as one, others as written."""
    try:
        ip = ipaddress.ip_address(host)
        return ("loopback" if ip.is_loopback else str(ip)), port
    except ValueError:
        return ("loopback" if host == "localhost" else host.lower()), port


def default_object_store_bytes() -> int:
    """The local Ray's object store: a tenth of the machine's memory, within 256 MiB..2 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 1024 * _MIB
    return int(min(2048 * _MIB, max(256 * _MIB, total // 10)))


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "engine = 'ray' needs Ray, which is not installed: pip install 'shipyard[ray]'."
        ) from None
    return ray


class RayEngine:
    """Runs items as Ray tasks; connect with :meth:`connect` (or ``get_engine``)."""

    name = "ray"

    def __init__(self, max_retries: int = 3) -> None:
        self.max_retries = max_retries

    @classmethod
    def connect(
        cls,
        address: str | None = None,
        num_cpus: int | None = None,
        *,
        object_store_bytes: int | None = None,
        timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> RayEngine:
        """Connect to the cluster at ``address`` (``HOST:PORT``), or start a local Ray.

        A local Ray is this process's own (never a cluster found through ``RAY_ADDRESS`` or
        left by ``ray start``), with ``num_cpus`` CPUs (default: all); it listens on 127.0.0.1
        only, has no dashboard and an object store of ``object_store_bytes`` (default
        :func:`default_object_store_bytes`). A process has one Ray driver: when it is already
        connected, it is reused if ``address`` is None or names the same cluster, and any
        other address is a ConfigError.
        """
        ray = _import_ray()
        if address is not None and address != "auto":  # auto: the cluster started on this machine
            check_reachable(address, timeout_s)
        if ray.is_initialized():
            _check_same_cluster(ray, address)
            return cls()
        if address is not None:
            _join(ray, address, timeout_s)
            return cls()
        if num_cpus is not None and (not isinstance(num_cpus, int) or num_cpus < 1):
            raise ConfigError(f"ray_num_cpus must be an int >= 1 or unset. Got {num_cpus!r}.")
        _bind_to_loopback(ray)
        ray.init(
            address="local",  # a Ray of its own, never one that RAY_ADDRESS or `ray start` left
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            object_store_memory=object_store_bytes or default_object_store_bytes(),
            _node_ip_address=LOOPBACK,
        )
        return cls()

    @property
    def parallelism(self) -> int:
        """CPUs of the cluster (one task per CPU)."""
        ray = _import_ray()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        *,
        label: str = "item",
        describe: Describe | None = None,
        progress: Progress | None = None,
    ) -> list[R]:
        """Run ``fn`` on every item as a Ray task; results in the items' order."""
        total = len(items)
        if total == 0:
            return []
        ray = _import_ray()
        global _REMOTE
        if _REMOTE is None:
            _REMOTE = ray.remote(_call)
        try:
            fn_ref = ray.put(fn)
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ParameterError(
                f"The function given to RayEngine.map ({_name_of(fn)}) cannot be sent to Ray "
                f"workers ({first}); define it at module level or close over picklable values."
            ) from exc
        remote = _REMOTE.options(max_retries=self.max_retries, retry_exceptions=False)
        refs: list[Any] = []
        for i, item in enumerate(items):
            try:
                refs.append(remote.remote(fn_ref, item))
            except Exception as exc:
                _cancel(ray, refs)
                name = item_name(label, describe, i, item)
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ParameterError(
                    f"{name} of {total} cannot be sent to Ray workers "
                    f"({type(item).__name__} is not picklable): {first}"
                ) from exc
        return self._collect(ray, refs, items, label, describe, progress)

    def _collect(
        self,
        ray: Any,
        refs: list[Any],
        items: Sequence[Any],
        label: str,
        describe: Describe | None,
        progress: Progress | None,
    ) -> list[Any]:
        """Wait for the tasks in completion order; the first failure cancels the rest."""
        total = len(refs)
        index_of = {ref: i for i, ref in enumerate(refs)}
        outcomes: list[Any] = [None] * total
        pending = list(refs)
        done = 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = index_of[ref]
                try:
                    ok, value, text = ray.get(ref)
                except Exception as exc:  # the task itself failed: worker lost, cancelled
                    _cancel(ray, pending)
                    name = item_name(label, describe, i, items[i])
                    missing = _MISSING_MODULE.search(str(exc))
                    if missing is not None:
                        raise ConfigError(
                            f"{name} of {total}: the Ray cluster's workers cannot import "
                            f"{missing.group(1)!r}. Install the same packages as here (shipyard "
                            "with its extras, the model's framework) on every node, or give "
                            "them to Ray as a runtime_env."
                        ) from exc
                    add_item_note(exc, self.name, name, total)
                    raise
                if not ok:
                    _cancel(ray, pending)
                    add_item_note(value, self.name, item_name(label, describe, i, items[i]), total)
                    value.add_note(f"worker traceback:\n{text}")
                    raise value
                outcomes[i] = value
                done += 1
                if progress is not None:
                    progress(done, total)
        return outcomes


def _cancel(ray: Any, refs: Sequence[Any]) -> None:
    """Cancel tasks not needed any more; a running one's worker process is ended (Ray's
    gentle cancel does not interrupt a task sleeping or in native code, which would hold its
    CPU until it finished)."""
    for ref in refs:
        with contextlib.suppress(Exception):  # already finished or gone: nothing to cancel
            ray.cancel(ref, force=True)


def _bind_to_loopback(ray: Any, on: bool = True) -> None:
    """Make the local Ray listen on 127.0.0.1 only (Ray >= 2.5x turns 127.0.0.1 into the
    machine's address and binds every interface unless it runs "without clusters");
    ``on=False`` undoes it, for a later driver that joins a cluster on the network."""
    from ray._private import ray_constants

    global _LOOPBACK_ONLY
    if on:
        os.environ[_LOOPBACK_ENV] = "0"  # for Ray's own child processes
        ray_constants.ENABLE_RAY_CLUSTER = False
        _LOOPBACK_ONLY = True
    elif _LOOPBACK_ONLY:  # only what this module changed
        os.environ.pop(_LOOPBACK_ENV, None)
        ray_constants.ENABLE_RAY_CLUSTER = True
        _LOOPBACK_ONLY = False


def _join(ray: Any, address: str, timeout_s: float) -> None:
    """``ray.init`` on a cluster, giving up after about ``timeout_s`` (Ray's own: 20-60 s)."""
    on_loopback = address != "auto" and _endpoint(*parse_address(address))[0] == "loopback"
    _bind_to_loopback(ray, on_loopback)  # a head on 127.0.0.1: Ray would dial the LAN address
    budget = str(max(1, round(timeout_s)))
    waits = {"RAY_gcs_server_port_wait_time_s": budget, "RAY_py_gcs_connect_timeout_s": budget}
    ours = [name for name in waits if name not in os.environ]  # an operator's own budget wins
    os.environ.update({name: waits[name] for name in ours})
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        raise ConfigError(
            f"ray_address = {address!r}: something listens there but Ray could not join it as "
            f"a cluster ({type(exc).__name__}: {str(exc).splitlines()[0]}). Check that it is "
            "the head node's GCS port (6379 by default), that both sides run the same Ray and "
            "Python versions, and, for a cluster with token authentication, that this process "
            "has RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN or "
            "~/.ray/auth_token)."
        ) from None
    finally:
        for name in ours:
            os.environ.pop(name, None)


def _check_same_cluster(ray: Any, address: str | None) -> None:
    """Refuse ``address`` when this process's Ray driver is connected to another cluster."""
    if address is None or address == "auto":
        return
    current = ray.get_runtime_context().gcs_address
    wanted = _endpoint(*parse_address(address))
    if address.startswith(_CLIENT_SCHEME) or _endpoint(*parse_address(current)) != wanted:
        raise ConfigError(
            f"ray_address = {address!r}, but this process is already connected to the Ray "
            f"cluster at {current!r} (one Ray driver per process). Use that address, unset "
            "ray_address, or run in a new process."
        )


def _name_of(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)
