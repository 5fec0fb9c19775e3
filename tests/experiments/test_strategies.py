"""--strategy=mirrored: two replicas (the two logical CPUs of conftest.py) take the steps one
device takes for the same global batch."""

import json

import numpy as np
import pytest
import tensorflow as tf

from experiments import config, models, runner
from experiments.data.datasets import load
from experiments.engine import strategies
from experiments.engine.evaluation import GroupMetrics
from experiments.errors import ExperimentError
from tests.experiments import test_towers

# The towers tests' tiny comparison, with two initializers.
TINY = {**test_towers.TINY, "initializers": ("xavier_normal", "kaiming_uniform")}


@pytest.fixture(scope="module")
def mirrored():
    strategy = strategies.get("mirrored")
    assert strategy.num_replicas_in_sync == 2  # else the tests below prove nothing
    return strategy


def test_every_replica_starts_from_the_single_device_weights(mirrored):
    data = load("shapeset", 320, 64)
    settings = config.resolve(**TINY)
    cell = settings.cells()[0]
    lone = models.initialize_run(settings, cell, data, initializer="xavier_normal", seed=0)
    expected = [weight.numpy() for weight in lone.model.weights]
    settings = config.resolve(**TINY, strategy="mirrored")
    model = models.initialize_run(
        settings, cell, data, initializer="xavier_normal", seed=0
    ).model
    for weight, single in zip(model.weights, expected, strict=True):
        copies = mirrored.experimental_local_results(weight.value)
        assert len(copies) == 2
        for copy in copies:
            np.testing.assert_array_equal(copy.numpy(), single)


def test_a_mirrored_comparison_equals_the_single_device_one(tmp_path, mirrored):
    results = {}
    for strategy in ("none", "mirrored"):
        settings = config.resolve(
            **TINY, strategy=strategy, logdir=str(tmp_path / strategy), experiment="e"
        )
        entries = runner.compare(settings, progress=lambda _: None)
        results[strategy] = {
            entry["initializer"]: (
                entry,
                json.loads((tmp_path / strategy / "e" / entry["run_dir"] / "run.json").read_text()),
            )
            for entry in entries
        }
    for spec, (entry, details) in results["none"].items():
        other, other_details = results["mirrored"][spec]
        assert other["steps"] == entry["steps"] == 20
        for field in ("initial_loss", "final_loss", "final_test_loss", "final_test_accuracy"):
            np.testing.assert_allclose(other[field], entry[field], rtol=1e-5)
        history, other_history = details["history"], other_details["history"]
        for key, values in history.items():
            np.testing.assert_allclose(other_history[key], values, rtol=1e-4, err_msg=key)
        # and training moved the loss: equality is not of two untouched models
        assert entry["final_loss"] < entry["initial_loss"] - 0.05


def test_a_bad_batch_on_any_replica_is_found(mirrored):
    with mirrored.scope():
        metric = GroupMetrics(["arm0", "arm1"])
    update = tf.function(
        lambda y, arm0, arm1: mirrored.run(
            metric.update_state, args=(y, {"arm0": arm0, "arm1": arm1})
        )
    )
    good = np.full((4, 3), 1 / 3, "float32")
    bad_on_the_second_replica = good.copy()
    bad_on_the_second_replica[3, 1] = np.inf
    labels = np.zeros(4, "int32")
    for arm0 in (good, good, bad_on_the_second_replica, good):
        dataset = tf.data.Dataset.from_tensors((labels, arm0, good))
        (shards,) = mirrored.experimental_distribute_dataset(dataset)
        update(*shards)
    result = metric.result()
    assert float(result["arm0_nonfinite_batch"]) == 3
    assert float(result["arm1_nonfinite_batch"]) == 0
    # the sums add up across replicas: the mean over all 4 examples of each batch
    np.testing.assert_allclose(float(result["arm1_cross_entropy"]), np.log(3), rtol=1e-6)


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ExperimentError, match="--strategy must be one of none, mirrored"):
        config.resolve(strategy="multiworker")


def test_arms_with_their_own_optimizers_mirror_as_on_one_device(tmp_path, mirrored):
    # Two learning rates in one group, under muP: a GroupOptimizer of four Adams.
    results = {}
    for strategy in ("none", "mirrored"):
        settings = config.resolve(
            **{**TINY, "initializers": ("kaiming_uniform",)}, learning_rate=(0.01, 0.05),
            parametrization=("mup",), base_width=8, optimizer=("adam",), strategy=strategy,
            logdir=str(tmp_path / strategy), experiment="e",
        )
        entries = runner.compare(settings, progress=lambda _: None)
        results[strategy] = {entry["learning_rate"]: entry for entry in entries}
    for rate, entry in results["none"].items():
        other = results["mirrored"][rate]
        assert entry["group_size"] == other["group_size"] == 2
        assert entry["final_loss"] == pytest.approx(other["final_loss"], rel=1e-4)
