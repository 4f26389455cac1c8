"""``--executor ray`` against a real Ray cluster on this machine: one head on the loopback interface for the whole
module (``ray start --head --block``, stopped by its own process id after), the tiny Table 1 sweep through it
bit-identical to the local executor, a worker killed mid-run (the sweep still completes with identical results),
torch threads per task from its resources on reused workers, and an unreachable ``--address``.

``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray on 127.0.0.1: without it Ray swaps a loopback address for the
node's outward interface, and this test talks to nothing but this machine's loopback. The cluster uses token
authentication, as ``ray start`` does by default, so joining it by address needs ``RAY_AUTH_MODE=token``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from executor_sweeps import TINY_SWEEP, assert_same_runs, run_signature

from stelab.cli import main
from stelab.executors import Task, run_graph
from stelab.executors.worker import lock_holder

ray = pytest.importorskip("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    """Loopback only, and token authentication with a token of the test's own (the head and the drivers read the
    same variables; nothing in ~/.ray is used or written)."""
    token = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import ray._private.ray_constants as constants
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")  # Ray reads these variables once; re-read them, as ray.init does when it enables tokens
    AuthenticationTokenLoader.instance().reset_cache()

    constants.ENABLE_RAY_CLUSTER, was = False, constants.ENABLE_RAY_CLUSTER  # ray may have been imported already
    yield
    constants.ENABLE_RAY_CLUSTER = was
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def cluster(ray_env):
    """A 2-CPU Ray head on 127.0.0.1 (its own temp folder: nothing shared with another Ray on the machine)."""
    port, temp = _free_port(), tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Unix socket paths are limited
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", "--port", str(port), "--node-ip-address",
                             "127.0.0.1", "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
                             "--temp-dir", temp], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if head.poll() is not None or time.monotonic() > deadline:
                head.kill()
                pytest.fail(f"the Ray head did not start: {head.stderr.read()[-2000:]}")
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    head.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    shutil.rmtree(temp, ignore_errors=True)


def test_the_sweep_on_a_ray_cluster_is_bit_identical_to_the_local_one(cluster, tmp_path, reference_sweep):
    out = tmp_path / "t1"
    assert main([*TINY_SWEEP, "--executor", "ray", "--address", cluster, "--out", str(out)]) == 0
    assert_same_runs(run_signature(out), reference_sweep)
    assert not ray.is_initialized()  # the driver left the cluster; the cluster stays for the next test


def test_a_worker_killed_mid_run_is_retried_with_identical_results(ray_env, tmp_path, reference_sweep,
                                                                   capsys):
    """Without --address the sweep starts (and stops) a Ray instance of its own. Once the float run has written a
    checkpoint, its worker process (named by the run's lock file) is killed; Ray reports the worker lost, the
    driver resubmits the run, which resumes from its checkpoint, and every number and weight comes out as if
    nothing had happened."""
    out = tmp_path / "t1"
    float_dir = out / "lenet5" / "seed0" / "float"
    killed: list[int] = []

    def kill_the_float_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (float_dir / "checkpoint.pt").exists():
            time.sleep(0.002)
        holder = lock_holder(float_dir / ".lock")
        if holder and holder[1] != os.getpid() and not (float_dir / "results.json").exists():
            os.kill(holder[1], signal.SIGKILL)
            killed.append(holder[1])

    watcher = threading.Thread(target=kill_the_float_worker, daemon=True)
    watcher.start()
    assert main([*TINY_SWEEP, "--executor", "ray", "--out", str(out)]) == 0
    watcher.join(timeout=5)
    assert killed, "the float run finished before its worker could be killed"
    err = capsys.readouterr().err
    assert f"lost {float_dir}" in err and "retry 1 of 2" in err
    assert_same_runs(run_signature(out), reference_sweep)
    assert lock_holder(float_dir / ".lock")[1] != killed[0]  # a new worker finished it


def test_each_task_sets_its_threads_from_its_resources(cluster):
    """Two CPUs, then one, on workers Ray reuses: each task sees its own count, not the last task's pool."""
    import torch

    from stelab.executors.ray_executor import RayExecutor

    seen = []
    with RayExecutor(address=cluster, cpus=2, retries=0) as ex:
        for cpus in (2, 1, 2):
            ex.cpus, ex.threads = cpus, cpus
            key = f"t{len(seen)}"
            seen.append(run_graph(ex, [Task(key, torch.get_num_threads)])[key])
    assert seen == [2, 1, 2]


def test_an_unreachable_address_is_one_line_and_writes_nothing(ray_env, tmp_path, capsys):
    out = tmp_path / "t1"
    start = time.monotonic()
    assert main([*TINY_SWEEP, "--executor", "ray", "--address", f"127.0.0.1:{_free_port()}", "--out",
                 str(out)]) == 2
    assert time.monotonic() - start < 10  # Ray alone would retry for minutes
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Ray cluster answers there" in err and "ray start --head" in err
    assert not out.exists()


def test_the_report_card_trains_its_cells_on_the_cluster(cluster, tmp_path, monkeypatch):
    """``stelab card --executor ray``: section 6's cells are Ray tasks (the worker writes the run folder and the
    cache entry); the same card run again locally trains nothing."""
    from stelab.experiments.card import config as card_config
    from stelab.experiments.card import run as card_run

    tiny = {"cosine_points": 4, "starts": 2, "descent_steps": 20, "classify_steps": 20, "fidelity_batches": 2,
            "lenet_epochs": 1, "resnet_epochs": 0, "symmetry_samples": 300}  # the driver's sections only
    monkeypatch.setitem(card_config.TIER_SIZES, "quick", tiny)
    lenet = Path(__file__).resolve().parents[2] / "results" / "lenet5-mnist-float" / "model.pt"
    out = tmp_path / "card"
    card = ["card", "relu", "--against", "--synthetic", "96", "--lrs", "0.05", "--lenet-init", str(lenet),
            "--no-progress", "--out", str(out)]
    assert main([*card, "--executor", "ray", "--address", cluster]) == 0
    cell = out / "train" / next((out / "cache" / "train").glob("relu-*.json")).stem
    assert (cell / "results.json").is_file() and lock_holder(cell / ".lock")[1] != os.getpid()
    monkeypatch.setattr(card_run, "train_cell", lambda *a: pytest.fail("a cached cell was trained again"))
    assert main(card) == 0
