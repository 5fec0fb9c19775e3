"""`--ray_address`: a comparison's groups of arms as tasks on a Ray cluster.

Runs are independent, so a comparison spreads over a cluster without a scheduler
of our own: each group of arms (`plan.Group`) is one Ray task that reserves
`--cpus_per_task` CPUs and `--gpus_per_task` GPUs, trains its arms with
`training.train_group` and writes their TensorBoard run folders (and `run.json`)
itself. The dataset goes to Ray's object store once. The driver keeps the
bookkeeping: it alone writes `summary.json`, `summary.csv` and the report, from
the results the tasks return, as each task finishes.

Faults are Ray's to handle: a task whose worker process or node dies is re-run,
at most `--task_retries` times; a task that still fails, or whose training
raised, is reported with its reason (its runs are recorded as failed), and the
others go on. Because the driver rewrites the summary after every finished task,
a driver that dies loses nothing that finished: the same command submits only
the missing and failed runs.

Every worker must reach `--logdir`: on a cluster of several nodes, `connect`
has a task on each node look for a file the driver wrote there, and refuses a
folder some node cannot see (a local path). `connect` also refuses, in one line,
an address where nothing listens and a task no node can hold, where Ray would
retry or wait for minutes. `head_node` starts a one-node cluster for the tests
and benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments import files
from experiments.config import ExperimentConfig
from experiments.errors import ExperimentError

if TYPE_CHECKING:
    from experiments.data.datasets import Dataset
    from experiments.engine.training import Arm, RunResult
    from experiments.plan import Group

# What every worker needs in its environment: the harness runs on TensorFlow.
WORKER_ENV = {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "1"}
INSTALL = "pip install 'keras-inits[ray]'"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A finished group: its runs' results, or why it failed; `seconds` is its wall time
    (on the worker: training only)."""

    group: Group
    results: list[RunResult] | None
    error: str | None
    seconds: float


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExperimentError(f"--ray_address needs Ray, an optional extra: {INSTALL}.") from None
    return ray


def shared_logdir(logdir: str) -> str:
    """`logdir` as every task names it: a URI as it is, a local path made absolute (a
    worker's working directory is not the driver's).

    Raises:
        ExperimentError: `ram://`, a file system inside one process.
    """
    if logdir.startswith("ram://"):
        raise ExperimentError(
            f"--logdir={logdir} lives in this process's memory, which Ray's workers cannot "
            "reach; give a shared folder or a URI such as gs://bucket/logs."
        )
    if logdir.startswith("file://"):
        logdir = logdir[len("file://") :]
    return logdir if files.is_uri(logdir) else os.path.abspath(logdir)


def connect(config: ExperimentConfig) -> None:
    """Joins the Ray cluster at `config.ray_address` (`local` starts one on this machine,
    `auto` finds the one this machine belongs to), checks that some node can run a task
    of `--cpus_per_task` and `--gpus_per_task`, and that every node sees the logdir
    (made absolute by `shared_logdir`). The driver's TensorFlow takes GPU memory only as
    it needs it (it only builds models to check them; the tasks need the memory).

    Raises:
        ExperimentError: Ray is missing, the cluster cannot be reached, no node fits a
            task, or some node cannot see the logdir.
    """
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()
    _check_listening(config.ray_address)
    options: dict[str, Any] = {}
    if config.ray_address == "local":  # a new cluster: the dashboard is not needed
        options["include_dashboard"] = False
    try:
        ray.init(
            address=config.ray_address,
            runtime_env={"env_vars": WORKER_ENV},
            # Workers' own logs (TensorFlow's start-up lines) stay in Ray's session
            # folder; the driver prints one line per run.
            log_to_driver=False,
            configure_logging=False,
            **options,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ExperimentError(
            f"Cannot reach the Ray cluster at --ray_address={config.ray_address}: "
            f"{_first_line(error)}"
        ) from None
    try:
        _check_task_fits(ray, config)
        _check_logdir_reachable(ray, config.logdir)
    except BaseException:
        ray.shutdown()
        raise
    _grow_gpu_memory()


def disconnect() -> None:
    """Leaves the cluster (and stops it, if `connect` started it for `local`)."""
    _ray().shutdown()


def _check_task_fits(ray: Any, config: ExperimentConfig) -> None:
    """Ray would wait forever for a node that can run the task: say so instead."""
    wanted = {"CPU": config.cpus_per_task, "GPU": config.gpus_per_task}
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    if any(all(node.get(name, 0) >= amount for name, amount in wanted.items()) for node in nodes):
        return
    largest = max(
        nodes, key=lambda node: (node.get("GPU", 0), node.get("CPU", 0)), default={}
    )
    raise ExperimentError(
        f"No node of the Ray cluster can give one task --cpus_per_task="
        f"{config.cpus_per_task:g} CPUs and --gpus_per_task={config.gpus_per_task:g} GPUs (the "
        f"largest has {largest.get('CPU', 0):g} CPUs and {largest.get('GPU', 0):g} GPUs); ask "
        "for less."
    )


def _check_listening(address: str, timeout: float = 10.0) -> None:
    """For `host:port`: fails fast when nothing listens there (Ray itself retries for
    minutes before giving up)."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or "://" in address:
        return  # local, auto, or a scheme Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise ExperimentError(
            f"Cannot reach the Ray cluster at --ray_address={address}: {error.strerror or error}; "
            "is `ray start --head` running there?"
        ) from None


def _check_logdir_reachable(ray: Any, logdir: str) -> None:
    """On more than one node: a file written here must be visible from every node."""
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if len(nodes) < 2 or files.is_uri(logdir):  # a URI names a file system every node reaches
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = Path(logdir) / f".keras-inits-reachable-{uuid.uuid4().hex}"
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("")
    except OSError as error:
        raise ExperimentError(f"Cannot write into --logdir={logdir}: {error}") from None
    try:
        look = ray.remote(num_cpus=0)(os.path.exists)
        seen = ray.get(
            [
                look.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                ).remote(str(marker))
                for node in nodes
            ]
        )
    finally:
        marker.unlink()
    blind = [
        node["NodeManagerAddress"] for node, found in zip(nodes, seen, strict=True) if not found
    ]
    if blind:
        raise ExperimentError(refusal(logdir, len(nodes), blind))


def refusal(logdir: str, nodes: int, blind: Sequence[str]) -> str:
    """Why `logdir` cannot hold a comparison on a cluster of `nodes` nodes."""
    return (
        f"--logdir={logdir} is not reachable from {len(blind)} of the cluster's {nodes} nodes "
        f"({', '.join(blind)}): it is local to this machine. Each task writes its runs where "
        "it trains; give a folder every node mounts (a shared file system)."
    )


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _grow_gpu_memory() -> None:
    """TensorFlow reserves a GPU's whole memory on first use; this makes it take what it
    needs, so tasks sharing a GPU (`--gpus_per_task` below 1, or the driver's checks)
    do not starve each other. Possible only before TensorFlow starts."""
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)


def _use_cpus(cpus: float) -> None:
    """Sizes TensorFlow's thread pools to the task's CPUs, so tasks sharing a node do not
    oversubscribe it; GPU memory as in `_grow_gpu_memory`. Possible only before
    TensorFlow starts; a reused worker already has the same settings."""
    import tensorflow as tf

    threads = max(1, int(cpus))
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    _grow_gpu_memory()


def _warm(cpus: float) -> None:
    _use_cpus(cpus)
    import experiments.engine.training  # noqa: F401  (TensorFlow, Keras, the plugin)


def warm_up(config: ExperimentConfig, groups: int) -> None:
    """Has as many workers as will train at once (at most `groups`) import TensorFlow and
    the harness now, while the driver loads data and checks the models: the import takes
    seconds, and Ray gives the groups' tasks these same workers. Not for GPU tasks, whose
    workers Ray starts afresh for every task."""
    if config.gpus_per_task:
        return
    ray = _ray()
    slots = ray.cluster_resources().get("CPU", 1) // config.cpus_per_task
    warm = ray.remote(_warm).options(num_cpus=config.cpus_per_task)
    for _ in range(int(max(1, min(slots, groups)))):
        warm.remote(config.cpus_per_task)


def train_task(
    config: ExperimentConfig, data: Dataset, group: Group, arms: Sequence[Arm]
) -> tuple[list[RunResult], float]:
    """One Ray task: trains a group on the worker; returns its results and wall time."""
    _use_cpus(config.cpus_per_task)
    from experiments.engine.training import train_group

    started = time.perf_counter()
    results = train_group(config, data, cell=group.cell, seed=group.seed, arms=arms)
    return results, time.perf_counter() - started


def train_groups(
    config: ExperimentConfig, data: Dataset, work: Sequence[tuple[Group, Sequence[Arm]]]
) -> Iterator[Outcome]:
    """Submits every group with its arms at once; yields each outcome as its task ends."""
    ray = _ray()
    task = ray.remote(train_task).options(
        num_cpus=config.cpus_per_task,
        num_gpus=config.gpus_per_task,
        max_retries=config.task_retries,
        retry_exceptions=False,  # a bug or a bad setting fails the same way again
    )
    try:
        shared = ray.put(data)
    except ray.exceptions.RayError as error:
        raise ExperimentError(
            f"Cannot put the dataset into Ray's object store: {_first_line(error)}"
        ) from None
    pending = {
        task.remote(config, shared, group, list(arms)): (group, time.perf_counter())
        for group, arms in work
    }
    while pending:
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        group, submitted = pending.pop(ready)
        try:
            results, seconds = ray.get(ready)
        except ray.exceptions.RayTaskError as error:
            cause = error.cause if error.cause is not None else error
            yield Outcome(group, None, f"{type(cause).__name__}: {_first_line(cause)}", 0.0)
        except ray.exceptions.RayError as error:
            # The worker or its node died on every try.
            attempts = config.task_retries + 1
            reason = f"{type(error).__name__} (up to {attempts} attempts): {_first_line(error)}"
            yield Outcome(group, None, reason, time.perf_counter() - submitted)
        else:
            yield Outcome(group, results, None, seconds)


@contextlib.contextmanager
def head_node(num_cpus: int, log: Path) -> Iterator[str]:
    """A one-node Ray cluster on 127.0.0.1 for tests and benchmarks: `ray start --head
    --block` with `num_cpus` CPUs and token authentication (the token is set in this
    process's environment, for the drivers and nodes it starts). Yields its address;
    stops every process of the cluster on exit."""
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # One token per process: Ray reads it once.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    ray = _ray()
    command = [
        str(Path(sys.executable).parent / "ray"),
        *("start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1"),
        *(f"--num-cpus={num_cpus}", "--include-dashboard=false", "--disable-usage-stats"),
        "--block",
    ]
    with log.open("w") as output:
        # A session of its own: its process group then holds every process of the cluster.
        head = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start failed:\n{log.read_text()}")
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
                break
            except (ConnectionError, RuntimeError):
                time.sleep(1)
        ray.shutdown()
        yield address
    finally:
        ray.shutdown()
        for stop in (signal.SIGTERM, signal.SIGKILL):  # then whatever the raylet left
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, stop)
            with contextlib.suppress(subprocess.TimeoutExpired):
                head.wait(timeout=5)
