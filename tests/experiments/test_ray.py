"""--ray_address: the comparison on a real Ray cluster started on this machine (127.0.0.1,
2 CPUs), against the same comparison in-process; faults of workers and of the driver."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import config, runner
from experiments.engine import cluster
from experiments.errors import ExperimentError
from tests.experiments import test_strategies

# Two groups (seeds) of two arms.
TINY = {**test_strategies.TINY, "seeds": (0, 1)}
TASK_TITLE = "ray::train_task"  # Ray names a worker's process after the task it runs


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 with 2 CPUs (stopped after the module's tests)."""
    with cluster.head_node(2, tmp_path_factory.mktemp("ray") / "head.log") as address:
        yield address


def _settings(tmp_path: Path, **changes) -> config.ExperimentConfig:
    return config.resolve(**{**TINY, **changes}, logdir=str(tmp_path), experiment="e")


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The reference: the comparison trained in this process."""
    entries = runner.compare(_settings(tmp_path_factory.mktemp("here")), progress=lambda _: None)
    return {summary_key(entry): entry for entry in entries}


def summary_key(entry):
    return entry["initializer"], entry["seed"]


def assert_same_results(entries, reference):
    assert {summary_key(entry) for entry in entries} == set(reference)
    for entry in entries:
        expected = reference[summary_key(entry)]
        assert entry["status"] == expected["status"] == "ok"
        assert entry["steps"] == expected["steps"] == 20
        for field in ("initial_loss", "final_loss", "final_test_loss", "final_test_accuracy"):
            np.testing.assert_allclose(entry[field], expected[field], rtol=1e-4, err_msg=field)


def _event_files(root: Path, entries) -> dict[str, int]:
    return {e["run_dir"]: len(list((root / e["run_dir"]).glob("events.*"))) for e in entries}


def test_a_comparison_on_ray_equals_the_in_process_one(ray_address, in_process, tmp_path):
    lines = []
    entries = runner.compare(_settings(tmp_path, ray_address=ray_address), progress=lines.append)
    assert_same_results(entries, in_process)
    # One line per finished run, with how many remain.
    run_lines = [line for line in lines if line.startswith("run ")]
    assert [line.rsplit("; ", 1)[1] for line in run_lines] == [
        "3 to go",
        "2 to go",
        "1 to go",
        "all done",
    ]
    # The workers wrote the run folders; the driver the summary and the report.
    root = tmp_path / "e"
    stored = json.loads((root / "summary.json").read_text())["runs"]
    assert_same_results(stored, in_process)
    for entry in stored:
        run = root / entry["run_dir"]
        assert json.loads((run / "run.json").read_text())["history"]["step"] == [0, 10, 20]
        assert list(run.glob("events.out.tfevents.*"))
    assert "## Failed runs" not in (root / "report.md").read_text()


def test_ray_tasks_train_under_a_strategy_into_a_relative_logdir(
    ray_address, in_process, tmp_path, monkeypatch
):
    """--strategy and --ray_address combine: each task mirrors over the devices Ray gave it
    (here one CPU: one replica, so this checks the path, not two replicas). A relative
    --logdir is the driver's: the workers, started elsewhere, write there too."""
    monkeypatch.chdir(tmp_path)
    settings = config.resolve(
        **TINY, ray_address=ray_address, strategy="mirrored", logdir="relative", experiment="e"
    )
    entries = runner.compare(settings, progress=lambda _: None)
    assert_same_results(entries, in_process)
    for entry in entries:
        assert (tmp_path / "relative" / "e" / entry["run_dir"] / "run.json").exists()


def test_a_task_no_node_can_run_is_refused(ray_address, tmp_path):
    settings = _settings(tmp_path, ray_address=ray_address, gpus_per_task=1)
    with pytest.raises(ExperimentError, match="No node .* can give one task .*--gpus_per_task=1"):
        runner.compare(settings)


def test_an_in_memory_logdir_is_refused_on_ray():
    with pytest.raises(ExperimentError, match="lives in this process's memory"):
        cluster.shared_logdir("ram://logs")
    assert cluster.shared_logdir("file:///tmp/logs") == "/tmp/logs"


def _kill_a_task(timeout: float = 120) -> int:
    """SIGKILLs the first worker process found running a training task; returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                title = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if proc.name.isdigit() and title.startswith(TASK_TITLE):
                os.kill(int(proc.name), signal.SIGKILL)
                return int(proc.name)
        time.sleep(0.05)
    raise AssertionError("no training task started")


def _compare_in_thread(settings):
    outcome = {"lines": []}

    def target():
        try:
            outcome["entries"] = runner.compare(settings, progress=outcome["lines"].append)
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def test_a_killed_worker_is_retried_and_nothing_is_lost(ray_address, in_process, tmp_path):
    thread, outcome = _compare_in_thread(_settings(tmp_path, ray_address=ray_address))
    _kill_a_task()
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert_same_results(outcome["entries"], in_process)
    # The retried group's folders hold its second attempt only.
    root = tmp_path / "e"
    assert set(_event_files(root, outcome["entries"]).values()) == {1}


def test_a_task_that_keeps_dying_is_recorded_failed_then_trained_again(
    ray_address, in_process, tmp_path
):
    settings = _settings(tmp_path, ray_address=ray_address, task_retries=0)
    thread, outcome = _compare_in_thread(settings)
    _kill_a_task()
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    entries = outcome["entries"]
    failed = [entry for entry in entries if entry["status"] == "failed"]
    assert len(failed) == 2  # the killed group's two arms; the other group went on
    assert {entry["seed"] for entry in failed} == {failed[0]["seed"]}
    assert all("up to 1 attempts" in entry["error"] for entry in failed)
    assert sum("failed (" in line for line in outcome["lines"]) == 2
    report = (tmp_path / "e" / "report.md").read_text()
    assert "## Failed runs" in report
    ok = [entry for entry in entries if entry["status"] == "ok"]
    assert len(ok) == 2
    # The same command trains the failed runs only.
    lines = []
    again = runner.compare(settings, progress=lines.append)
    assert sum("already in summary.json" in line for line in lines) == 2
    trained = [line for line in lines if line.startswith("run ") and "skipped" not in line]
    assert len(trained) == 2
    assert_same_results(again, in_process)
    assert "## Failed runs" not in (tmp_path / "e" / "report.md").read_text()


def test_a_killed_driver_loses_nothing_that_finished(ray_address, in_process, tmp_path):
    command = [
        sys.executable,
        "-m",
        "experiments.compare",
        f"--ray_address={ray_address}",
        "--cpus_per_task=2",  # one group at a time: the first finishes before the second
        f"--logdir={tmp_path}",
        "--experiment=e",
        "--initializers=xavier_normal,kaiming_uniform",
        "--depth=2",
        "--width=16",
        "--train_size=320",
        "--test_size=64",
        "--epochs=2",
        "--seeds=0,1",
        "--probe_size=32",
        "--histogram_every=5",
    ]
    driver = subprocess.Popen(
        command,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    summary = tmp_path / "e" / "summary.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and driver.poll() is None:
        if summary.exists() and json.loads(summary.read_text())["runs"]:
            break
        time.sleep(0.05)
    driver.kill()
    driver.wait()
    finished = json.loads(summary.read_text())["runs"]
    assert len(finished) == 2, "the driver was killed after the first group, before the second"

    lines = []
    settings = _settings(tmp_path, ray_address=ray_address, cpus_per_task=2)
    entries = runner.compare(settings, progress=lines.append)
    skipped = [line for line in lines if "already in summary.json" in line]
    assert len(skipped) == 2
    trained = [line for line in lines if line.startswith("run ") and "skipped" not in line]
    assert len(trained) == 2
    assert_same_results(entries, in_process)


def test_ray_only_settings_need_an_address():
    with pytest.raises(ExperimentError, match="--cpus_per_task only applies to runs on a Ray"):
        config.resolve(cpus_per_task=2)


def test_an_unreachable_cluster_is_one_line(tmp_path):
    with pytest.raises(ExperimentError, match="Cannot reach the Ray cluster"):
        cluster.connect(_settings(tmp_path, ray_address="127.0.0.1:1"))  # nothing listens



def test_a_logdir_that_some_node_cannot_see_is_refused(tmp_path):
    """A second node in a mount namespace of its own, where the logdir's folder is an empty
    tmpfs: to that node, the driver's folder is local to another machine."""
    private = tmp_path / "private"
    private.mkdir()
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("a node with a private mount needs `unshare -m` (root)")

    with cluster.head_node(1, tmp_path / "head.log") as address:
        import ray  # after head_node has set the cluster's token, which Ray reads on import

        ray_cli = Path(sys.executable).parent / "ray"
        start = (
            f'mount -t tmpfs none "{private}" && exec "{ray_cli}" start --address={address} '
            "--node-ip-address=127.0.0.1 --num-cpus=1 --disable-usage-stats --block"
        )
        node = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", start],
            stdout=(tmp_path / "node.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            deadline = time.monotonic() + 90
            while sum(n["Alive"] for n in ray.nodes()) < 2:
                assert node.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "node.log"
                ).read_text()
                time.sleep(0.5)
            ray.shutdown()
            cluster.connect(_settings(tmp_path / "shared", ray_address=address))  # both see it
            with pytest.raises(ExperimentError, match=r"not reachable from 1 of the cluster's 2"):
                cluster.connect(_settings(private / "logs", ray_address=address))
        finally:
            ray.shutdown()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
