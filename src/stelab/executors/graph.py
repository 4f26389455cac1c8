"""A sweep as a small graph of tasks, driven to the end on any executor.

A :class:`Task` is a pure function of its arguments that writes its own run folder (``key``); ``after`` names the
tasks whose results it needs (a quantized cell after the float run it starts from). :func:`run_graph` submits every
task as soon as the tasks it waits for have finished, so on a pool of workers a cell starts when *its* float run is
done, not when all of them are. A task whose worker was lost (a killed process, a dead node, an OOM kill) is
submitted again, at most ``executor.retries`` times; the task resumes from its run folder's checkpoint, whose files
are written atomically, so a lost attempt leaves nothing half-written behind. An error raised by the task itself is
not retried (it would fail again): the driver cancels what is in flight and raises it, naming the run.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class Task:
    """One run of a sweep: ``fn(*args)`` (picklable, module-level), named by ``key`` (its run folder).

    ``after`` are the keys of tasks that must finish first; ``when``, given their results by key, says whether this
    task still runs (a cell is pointless when its float run diverged); ``why_not`` is what the log says then. ``lock``
    is a file the worker holds while the task runs, so that two drivers never train one folder at once.
    """

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    after: tuple[str, ...] = ()
    when: Callable[[Mapping[str, Any]], bool] | None = field(default=None, compare=False)
    why_not: str = "a run it starts from did not finish"
    lock: str | None = None


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: ``ok`` with the task's return value, ``error`` (the task raised ``error``) or ``lost``
    (the worker died under it; ``error`` says how)."""

    kind: Literal["ok", "error", "lost"]
    value: Any = None
    error: BaseException | None = None
    where: str = ""  # for a remote failure: the log to read


class Executor(Protocol):
    """What :func:`run_graph` needs of an engine. ``slots``: tasks in flight at most (``None``: the engine queues
    them itself); ``in_process``: tasks run in this process (progress bars allowed); ``retries``: resubmissions of a
    lost task."""

    name: str
    slots: int | None
    in_process: bool
    retries: int

    def submit(self, tasks: Sequence[Task]) -> list[Any]:
        """Start ``tasks`` (one wave: SLURM makes it one job array); a hashable handle per task."""

    def wait(self, handles: Sequence[Any]) -> list[tuple[Any, Outcome]]:
        """Block until at least one of ``handles`` has ended; each that has, with its outcome."""

    def cancel(self, handles: Sequence[Any]) -> None:
        """Stop these tasks (the driver is leaving); their folders keep their last checkpoint."""

    def close(self) -> None:
        """Release the engine (a pool, a Ray connection)."""


class SweepError(ValueError):
    """A run of the sweep raised (a bad configuration, missing data, ...): one line naming the run."""


def check_graph(tasks: Sequence[Task]) -> None:
    """Unique keys, and every ``after`` names an *earlier* task (a topological order, hence no cycle)."""
    seen: set[str] = set()
    for t in tasks:
        if t.key in seen:
            raise ValueError(f"two tasks named {t.key!r}: every run of a sweep needs its own folder")
        missing = [k for k in t.after if k not in seen]
        if missing:
            raise ValueError(f"task {t.key!r} waits for {missing}, which are not earlier tasks of the sweep")
        seen.add(t.key)


def dedupe(tasks: Iterable[Task]) -> list[Task]:
    """The tasks in order, each key once; a key given twice must mean the same run (same function and args)."""
    out: dict[str, Task] = {}
    for t in tasks:
        if t.key in out and (out[t.key].fn, out[t.key].args) != (t.fn, t.args):
            raise ValueError(f"two different runs would write {t.key}")
        out.setdefault(t.key, t)
    return list(out.values())


def run_graph(executor: Executor, tasks: Sequence[Task], log: Callable[[str], None] | None = None,
              done: Callable[[Task], Any] | None = None) -> dict[str, Any]:
    """Run every task of the graph on ``executor``; the results by key (skipped tasks have none). ``done(task)`` is
    called in the driver as each task finishes (a progress bar).

    Long because it is the one loop of the driver: release the tasks whose predecessors are done, submit what the
    executor has room for, wait for any to end, and retry or fail; kept in one piece so its invariants stay visible.
    """
    check_graph(tasks)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    results: dict[str, Any] = {}
    skipped: set[str] = set()
    waiting, ready = list(tasks), deque()
    in_flight: dict[Any, Task] = {}
    attempts: dict[str, int] = {}
    try:
        while waiting or ready or in_flight:
            still = []
            for t in waiting:
                if not all(k in results or k in skipped for k in t.after):
                    still.append(t)
                elif any(k in skipped for k in t.after) or (
                        t.when is not None and not t.when({k: results[k] for k in t.after})):
                    skipped.add(t.key)
                    log(f"skip {t.key} ({t.why_not})")
                else:
                    ready.append(t)
            waiting = still
            room = len(ready) if executor.slots is None else min(len(ready), executor.slots - len(in_flight))
            if room > 0:
                wave = [ready.popleft() for _ in range(room)]
                in_flight.update(zip(executor.submit(wave), wave))
            if not in_flight:
                continue
            for handle, outcome in executor.wait(list(in_flight)):
                task = in_flight.pop(handle)
                if outcome.kind == "ok":
                    results[task.key] = outcome.value
                    if done is not None:
                        done(task)
                elif outcome.kind == "lost" and attempts.get(task.key, 0) < executor.retries:
                    attempts[task.key] = attempts.get(task.key, 0) + 1
                    log(f"lost {task.key} ({outcome.error}); retry {attempts[task.key]} of {executor.retries}")
                    ready.appendleft(task)
                else:
                    raise _failure(task, outcome, executor.retries)
    except BaseException:
        if in_flight:
            executor.cancel(list(in_flight))
        raise
    return results


def _failure(task: Task, outcome: Outcome, retries: int) -> BaseException:
    """The error the driver raises: one line naming the run for what a user can fix (and for every failure known
    only as a remote log's text), the task's own exception (and traceback) for a bug."""
    err, where = outcome.error, f" (log: {outcome.where})" if outcome.where else ""
    if outcome.kind == "lost":
        return SweepError(f"{task.key}: its worker was lost {retries + 1} times, last: {err}{where}; rerun the same "
                          "command to continue the sweep")
    if isinstance(err, SweepError):
        return err
    if where or isinstance(err, (ValueError, OSError, KeyError)):
        return SweepError(f"{task.key}: {err}{where}")
    return err


def wait_poll(handles: Sequence[Any], done: Callable[[Any], bool], interval: float) -> list[Any]:
    """The handles that are done, polling every ``interval`` seconds until there is one (engines without a
    wait-for-any of their own)."""
    while True:
        finished = [h for h in handles if done(h)]
        if finished:
            return finished
        time.sleep(interval)
