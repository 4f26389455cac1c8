"""``--executor ray``: each run a Ray task with its CPUs and GPUs; the driver (this process) waits on the graph.

``address=None`` starts a Ray instance on this machine for the sweep (bound to the loopback interface, no dashboard,
a small object store: runs return a summary of a few hundred bytes, their folders are on disk) and stops it after.
``address="auto"`` joins the cluster ``ray start`` runs on this node; ``host:port`` joins the head at that address
(``ray://host:port`` through Ray Client). An address nobody answers at is refused at once with one line: Ray itself
would retry a dead address for minutes.

Runs are submitted with ``max_retries=0``: a task whose worker died is resubmitted by :func:`~.graph.run_graph`,
like on every other executor, and resumes from its checkpoint.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from .graph import Outcome, Task
from .worker import run_task

OBJECT_STORE_BYTES = 256 * 2**20  # the results are tiny; Ray's default (30% of RAM) would not fit Docker's /dev/shm
START_HINT = ("start one with `ray start --head --num-cpus N` (then --address auto) or leave --address out to run "
              "the sweep on a Ray instance of its own on this machine")


def import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray: pip install 'stelab[ray]'") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` (or ``ray://host:port``) that accepts TCP connections; ValueError with the fix otherwise."""
    text = address.removeprefix("ray://")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"--address {address}: no Ray cluster answers there ({reason}); {START_HINT}") from None


class RayExecutor:
    """Runs on a Ray cluster, ``cpus`` CPUs (and torch threads) and ``gpus`` GPUs per run."""

    name, slots, in_process = "ray", None, False

    def __init__(self, address: str | None = None, cpus: float = 1, gpus: float = 0, retries: int = 2,
                 num_cpus: int | None = None) -> None:
        if not cpus > 0 or gpus < 0:
            raise ValueError(f"need --cpus-per-run > 0 and --gpus-per-run >= 0, got {cpus} and {gpus}")
        ray = import_ray()
        self.cpus, self.gpus, self.retries = cpus, gpus, retries
        self.threads = max(1, int(cpus))
        self._owned = not ray.is_initialized()  # a caller's own ray.init() is left as it was
        if self._owned:
            self._connect(ray, address, num_cpus)
        self._check_fits(ray)
        self._remote = ray.remote(run_task)
        self._cwd = os.getcwd()

    @staticmethod
    def _connect(ray: Any, address: str | None, num_cpus: int | None) -> None:
        quiet = dict(logging_level=logging.WARNING)
        if address is None:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                     object_store_memory=OBJECT_STORE_BYTES, **quiet)
            return
        if address != "auto":
            check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as err:
            if _auth_refused(err):  # Ray (>= 2.5x) sends its token to an explicit address only when told to
                raise ValueError(f"--address {address}: the cluster refused this driver's token; its head uses "
                                 "token authentication (ray start's default): export RAY_AUTH_MODE=token and the "
                                 "cluster's token (~/.ray/auth_token of the head, or RAY_AUTH_TOKEN), or use "
                                 "--address auto on the head node") from None
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"--address {address}: {first}; {START_HINT}") from None

    def _check_fits(self, ray: Any) -> None:
        """Warn when no node has the resources of one run: Ray would keep such a task pending (no error)."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if nodes and not any(r.get("CPU", 0) >= self.cpus and r.get("GPU", 0) >= self.gpus for r in nodes):
            best = max(nodes, key=lambda r: r.get("CPU", 0))
            print(f"warning: no node of the Ray cluster has {self.cpus:g} CPU and {self.gpus:g} GPU for one run "
                  f"(largest: {best.get('CPU', 0):g} CPU, {best.get('GPU', 0):g} GPU); runs wait until an autoscaler "
                  "adds one", file=sys.stderr)

    def submit(self, tasks: Sequence[Task]) -> list[Any]:
        refs = []
        for t in tasks:
            options = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0, retry_exceptions=False,
                           name=_short(t.key))
            refs.append(self._remote.options(**options).remote(t.fn, t.args, self.threads, self._cwd, t.lock))
        return refs

    def wait(self, handles: Sequence[Any]) -> list[tuple[Any, Outcome]]:
        ray = import_ray()
        done, _ = ray.wait(list(handles), num_returns=1)
        more, _ = ray.wait([h for h in handles if h not in done], num_returns=len(handles) - 1, timeout=0) \
            if len(handles) > 1 else ([], [])
        return [(ref, self._outcome(ray, ref)) for ref in [*done, *more]]

    @staticmethod
    def _outcome(ray: Any, ref: Any) -> Outcome:
        lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
                ray.exceptions.OutOfMemoryError, ray.exceptions.LocalRayletDiedError)
        try:
            return Outcome("ok", ray.get(ref))
        except lost as err:
            return Outcome("lost", error=RuntimeError(str(err).strip().splitlines()[0] if str(err) else repr(err)))
        except ray.exceptions.RayTaskError as err:
            return Outcome("error", error=err.cause if err.cause is not None else err)
        except ray.exceptions.RayError as err:
            return Outcome("error", error=err)

    def cancel(self, handles: Sequence[Any]) -> None:
        ray = import_ray()
        for ref in handles:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # already finished or gone: nothing to stop
                pass

    def close(self) -> None:
        if self._owned:
            import_ray().shutdown()
            self._owned = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _auth_refused(err: BaseException) -> bool:
    """Whether a failed connection was the cluster refusing the (missing or wrong) authentication token."""
    while err is not None:
        if "InvalidAuthToken" in str(err) or type(err).__name__ == "AuthenticationError":
            return True
        err = err.__cause__ or err.__context__
    return False


def _short(key: str) -> str:
    """A task's name in Ray's listings: the last three parts of its run folder (``lenet5/seed0/2bit-relu``)."""
    return "/".join(key.replace(os.sep, "/").rstrip("/").split("/")[-3:])
