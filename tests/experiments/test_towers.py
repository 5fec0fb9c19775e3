"""Arms trained together, as towers or stacked: the same steps as alone, divergence
isolated, coupling refused."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from experiments import config, models, runner
from experiments.data.datasets import load
from experiments.engine import stacked, towers, training
from experiments.engine.evaluation import GroupMetrics
from experiments.engine.training import batches_per_epoch, training_batches
from experiments.errors import ExperimentError
from experiments.results import summary
from tests.experiments.test_settings_reach import TrainingSeen

SPECS = ("xavier_normal", "random_normal(stddev=0.1)", "kaiming_uniform")
LAYERS = ("hidden_1", "hidden_2", "output")  # the MLP of TINY (depth 2)
# The periodic scalar families of keras_inits.SignalHistograms.
SIGNALS = ("activation_std", "activation_gradient_std", "weight_gradient_std")
TINY = dict(
    seeds=(0,),
    depth=2,
    width=16,
    train_size=320,
    test_size=64,
    epochs=2,
    batch_size=32,
    probe_size=32,
    histogram_every=5,
)


@pytest.fixture(scope="module")
def data():
    return load("shapeset", 320, 64)


def _arms(settings: config.ExperimentConfig, specs, data, seed=0):
    cell = settings.cells()[0]
    return [
        models.initialize_run(settings, cell, data, initializer=spec, seed=seed).model
        for spec in specs
    ]


def _fit(group, data, seed=0, epochs=2):
    batches = training_batches(data.x_train, data.y_train, 32, seed=seed, epochs=epochs)
    steps = batches_per_epoch(len(data.x_train), 32)
    group.fit(batches, epochs=epochs, steps_per_epoch=steps, shuffle=False, verbose=0)


def _train(arms, data, optimizer="adam", engine=towers.Towers):
    """Trains the arms as a group (towers, or stacked with XLA as the harness does); the
    arms' own models hold the trained weights afterwards."""
    group = engine(arms, data.input_shape)
    towers.compile_group(group.model, keras.optimizers.get(optimizer), steps_per_execution=5)
    group.model.jit_compile = group.jit_compile
    _fit(group.model, data)
    group.sync([arm.name for arm in arms])
    return group


@pytest.mark.parametrize("engine", [towers.Towers, stacked.StackedArms])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_an_arm_trained_with_others_takes_the_steps_it_takes_alone(data, optimizer, engine):
    settings = config.resolve(**TINY)
    arms = _arms(settings, SPECS, data)
    _train(arms, data, optimizer, engine)
    for arm, spec in zip(arms, SPECS, strict=True):
        alone = _arms(settings, [spec], data)
        _train(alone, data, optimizer)
        for mine, lone in zip(arm.weights, alone[0].weights, strict=True):
            # XLA (the stack) sums in another order than oneDNN: float32 round-off, no more.
            np.testing.assert_allclose(mine.numpy(), lone.numpy(), rtol=1e-5, atol=2e-6)
        # and training moved them: the check is not about untouched weights
        initial = _arms(settings, [spec], data)[0].weights[0].numpy()
        assert not np.allclose(arm.weights[0].numpy(), initial)


def test_mlp_arms_stack_and_other_groups_train_as_towers(data):
    settings = config.resolve(**TINY)
    mlps = _arms(settings, SPECS, data)
    sgd = keras.optimizers.SGD()
    assert stacked.can_stack(mlps, sgd)
    assert isinstance(training._engine(mlps, data.input_shape, sgd), stacked.StackedArms)
    cnns = _arms(config.resolve(**TINY, model=("cnn",)), SPECS, data)
    assert not stacked.can_stack(cnns, sgd)
    assert isinstance(training._engine(cnns, data.input_shape, sgd), towers.Towers)
    assert not stacked.can_stack(mlps[:1], sgd)  # one arm: a plain model
    wider = _arms(config.resolve(**{**TINY, "width": 24}), SPECS[:1], data)
    assert not stacked.can_stack([mlps[0], *wider], sgd)

    def sequential(*layers, shape=data.input_shape):
        return keras.Sequential([keras.Input(shape), *layers])

    regularized = sequential(keras.layers.Flatten(), keras.layers.Dense(9, kernel_regularizer="l2"))
    dropout = sequential(keras.layers.Flatten(), keras.layers.Dropout(0.5), keras.layers.Dense(9))
    # Dense on an image without Flatten acts on its last axis only: not an MLP.
    unflattened = sequential(keras.layers.Dense(8), keras.layers.Dense(9))
    late_flatten = sequential(keras.layers.Dense(8), keras.layers.Flatten(), keras.layers.Dense(9))
    for model in (regularized, dropout, unflattened, late_flatten):
        assert not stacked.can_stack([model, model], sgd), model.layers
    vectors = sequential(keras.layers.Dense(8), keras.layers.Dense(9), shape=(12,))
    assert stacked.can_stack([vectors, vectors], sgd)
    inputs = keras.Input((12,))
    heads = [keras.layers.Dense(9)(inputs), keras.layers.Dense(3)(inputs)]
    two_outputs = keras.Model(inputs, heads)
    assert not stacked.can_stack([two_outputs, two_outputs], sgd)


@pytest.mark.parametrize(
    "optimizer",
    [keras.optimizers.Adafactor(), keras.optimizers.Lamb(), keras.optimizers.SGD(clipnorm=1.0)],
    ids=["adafactor", "lamb", "sgd-clipnorm"],
)
def test_optimizers_that_see_a_whole_variable_train_mlp_arms_as_towers(data, optimizer):
    # A stacked variable holds every arm's layer: Adafactor's factored moments, Lamb's
    # trust ratio and a per-variable norm clip would each span all the arms.
    mlps = _arms(config.resolve(**TINY), SPECS, data)
    assert not stacked.can_stack(mlps, optimizer)
    assert isinstance(training._engine(mlps, data.input_shape, optimizer), towers.Towers)


def test_a_model_whose_layer_list_is_not_its_chain_trains_as_towers(data):
    # A layer called twice appears once in model.layers: the stack would call it once.
    def twice_shared():
        inputs = keras.Input(data.input_shape)
        hidden = keras.layers.Dense(16, "tanh")(keras.layers.Flatten()(inputs))
        shared = keras.layers.Dense(16, "tanh")
        outputs = keras.layers.Dense(9, "softmax")(shared(shared(hidden)))
        return keras.Model(inputs, outputs)

    arms = [twice_shared(), twice_shared()]
    sgd = keras.optimizers.SGD()
    assert stacked.can_stack(arms, sgd)  # the layer list alone looks like an MLP
    assert not stacked.StackedArms(arms, data.input_shape).matches_arms()
    assert isinstance(training._engine(arms, data.input_shape, sgd), towers.Towers)
    settings = config.resolve(**TINY)
    mlps = _arms(settings, SPECS, data)
    assert stacked.StackedArms(mlps, data.input_shape).matches_arms()


def test_a_stack_starts_from_each_arms_weights_and_syncs_them_back(data):
    settings = config.resolve(**TINY)
    arms = _arms(settings, SPECS, data)
    initial = [[w.numpy() for w in arm.weights] for arm in arms]
    group = stacked.StackedArms(arms, data.input_shape)
    x = data.x_train[:8]
    outputs = group.model(x)
    for index, arm in enumerate(arms):
        np.testing.assert_allclose(
            outputs[towers.tower_name(index)], arm(x), rtol=1e-5, atol=1e-6
        )
    for layer in group.model.layers:  # overwrite the stack, then copy it back
        for weight in layer.weights:
            weight.assign(weight.numpy() + 1.0)
    group.sync(["arm1"])
    for index, arm in enumerate(arms):
        for before, weight in zip(initial[index], arm.weights, strict=True):
            np.testing.assert_allclose(weight.numpy(), before + (index == 1), rtol=1e-6)


def _signal_scalars(run_dir) -> dict[str, dict[int, float]]:
    """A run folder's periodic signal scalars, {tag: {step: value}}, as TensorBoard reads them."""
    events = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    ).Reload()
    scalars = {}
    for tag in events.Tags()["tensors"]:
        if tag.split("/")[0] in SIGNALS:
            scalars[tag] = {
                event.step: float(tf.make_ndarray(event.tensor_proto))
                for event in events.Tensors(tag)
            }
    return scalars


def test_the_harness_gives_the_same_results_grouped_or_not(tmp_path):
    results = {}
    for grouped in (True, False):
        settings = config.resolve(
            **TINY,  # one seed: each seed's group is trained the same way
            initializers=SPECS,
            group_arms=grouped,
            learning_rate=0.02,  # not the defaults (0.01, 0.9): they must reach the optimizer
            momentum=0.5,
            logdir=str(tmp_path / str(grouped)),
            experiment="same",
        )
        lines, seen = [], TrainingSeen()
        entries = runner.compare(settings, callbacks=[seen], progress=lines.append)
        results[grouped] = entries
        sizes = {entry["group_size"] for entry in entries}
        assert sizes == ({len(SPECS)} if grouped else {1})
        # MLP arms trained together stack; one at a time, each is a plain model.
        assert {entry["engine"] for entry in entries} == {"stacked" if grouped else "towers"}
        assert sum("group of 3" in line for line in lines) == (3 if grouped else 0)
        # Either engine trains with the optimizer the settings name.
        assert len(seen.fits) == (1 if grouped else 3)
        for fit in seen.fits:
            assert fit["optimizer"] is keras.optimizers.SGD
            assert (fit["learning_rate"], fit["momentum"]) == (pytest.approx(0.02), 0.5)
    last_step = TINY["epochs"] * TINY["train_size"] // TINY["batch_size"]
    # Step 0, then every 5 steps while training (taken before the step: 20 is not one).
    logged_steps = list(range(0, last_step, TINY["histogram_every"]))
    for mine, lone in zip(results[True], results[False], strict=True):
        assert (mine["initializer"], mine["seed"]) == (lone["initializer"], lone["seed"])
        for key in ("initial_loss", "final_loss", "final_test_loss", "final_test_accuracy"):
            assert mine[key] == pytest.approx(lone[key], rel=1e-4, abs=1e-5), key
        assert mine["steps"] == lone["steps"] == last_step == 20
        run = tmp_path / "True" / "same" / mine["run_dir"] / runner.RUN_DETAILS
        lone_run = tmp_path / "False" / "same" / lone["run_dir"] / runner.RUN_DETAILS
        mine_profile = json.loads(run.read_text())["profiles"]["final"]
        lone_profile = json.loads(lone_run.read_text())["profiles"]["final"]
        assert mine_profile["step"] == lone_profile["step"] == 20
        np.testing.assert_allclose(
            mine_profile["activation_std"], lone_profile["activation_std"], rtol=1e-4
        )
        # What TensorBoard shows along the way: the stack is synced before each periodic
        # snapshot, so every logged step's signals are the lone run's.
        mine_scalars = _signal_scalars(run.parent)
        lone_scalars = _signal_scalars(lone_run.parent)
        assert set(mine_scalars) == set(lone_scalars)
        for tag in (f"{family}/{layer}" for family in SIGNALS for layer in LAYERS):
            steps = sorted(mine_scalars[tag])
            assert steps == sorted(lone_scalars[tag]) == logged_steps, tag
            np.testing.assert_allclose(
                [mine_scalars[tag][step] for step in steps],
                [lone_scalars[tag][step] for step in steps],
                rtol=1e-4, err_msg=tag,
            )


def test_a_diverged_arm_is_recorded_frozen_and_does_not_perturb_the_others(tmp_path):
    # Weights of 1e20 overflow float32 in the first layer's output: NaN from step 1.
    blowing_up = "constant(value=1e20)"
    settings = config.resolve(
        **TINY,
        initializers=("xavier_normal", blowing_up, "kaiming_uniform"),
        activation=("relu",),
        logdir=str(tmp_path),
        experiment="diverge",
    )
    lines = []
    entries = {e["initializer"]: e for e in runner.compare(settings, progress=lines.append)}
    assert {entry["engine"] for entry in entries.values()} == {"stacked"}
    assert entries[blowing_up]["status"] == "diverged"
    assert entries[blowing_up]["diverged_at_step"] == entries[blowing_up]["steps"] == 1
    assert entries[blowing_up]["final_loss"] is None
    assert any("diverged at step 1" in line for line in lines)
    # The others went on, as they train without the diverging arm.
    alone = config.resolve(
        **TINY,
        initializers=("xavier_normal", "kaiming_uniform"),
        activation=("relu",),
        logdir=str(tmp_path),
        experiment="without",
    )
    reference = {e["initializer"]: e for e in runner.compare(alone, progress=lambda _: None)}
    for spec, entry in reference.items():
        assert entries[spec]["status"] == "ok" and entries[spec]["steps"] == 20
        assert entries[spec]["final_loss"] == pytest.approx(entry["final_loss"], rel=1e-5)
    history = json.loads(
        (tmp_path / "diverge" / entries[blowing_up]["run_dir"] / runner.RUN_DETAILS).read_text()
    )["history"]
    assert history["step"] == [0, 1]  # step 0, then the epoch it diverged in; nothing after


@pytest.mark.parametrize("engine", [towers.Towers, stacked.StackedArms])
def test_a_frozen_arms_model_keeps_its_weights_while_the_others_train(data, engine):
    settings = config.resolve(**TINY)
    arms = _arms(settings, SPECS[:2], data)
    group = _train(arms, data, engine=engine)
    group.freeze("arm1")
    frozen = [w.numpy() for w in arms[1].weights]
    moving = [w.numpy() for w in arms[0].weights]
    _fit(group.model, data, seed=1, epochs=1)
    group.sync(["arm0", "arm1"])
    for before, weight in zip(frozen, arms[1].weights, strict=True):
        np.testing.assert_array_equal(before, weight.numpy())
    assert not np.allclose(moving[0], arms[0].weights[0].numpy())


def test_the_group_loss_is_keras_own_loss_of_each_tower_with_its_regularizers():
    # The reference: each arm alone, compiled by Keras with the cross-entropy, whose
    # compute_loss adds the arm's L2 penalty.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 5)).astype("float32"), rng.integers(0, 3, 16)
    arms = []
    for seed in (1, 2):
        inputs = keras.Input((5,))
        hidden = keras.layers.Dense(
            8, activation="tanh", kernel_regularizer=keras.regularizers.L2(0.1),
            kernel_initializer=keras.initializers.GlorotNormal(seed),
        )(inputs)
        arms.append(keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden)))
    expected = 0.0
    for arm in arms:
        arm.compile(loss=towers.LOSS)
        expected += float(arm.compute_loss(x, y, arm(x)))
    group = towers.Towers(arms, (5,)).model
    assert sum(float(arm.losses[0]) for arm in arms) > 0.01  # the penalty counts
    np.testing.assert_allclose(float(group.compute_loss(x, y, group(x))), expected, rtol=1e-6)


def test_group_metrics_mark_each_towers_first_bad_batch():
    metric = GroupMetrics(["arm0", "arm1"])
    good, bad = np.full((2, 3), 1 / 3, "float32"), np.array([[1.0, np.nan, 0.0]] * 2, "float32")
    labels = np.zeros(2, "int32")
    for first, second in ((good, good), (good, good), (bad, good), (good, bad), (bad, good)):
        metric.update_state(labels, {"arm0": first, "arm1": second})
    result = metric.result()
    assert float(result["arm0_nonfinite_batch"]) == 3
    assert float(result["arm1_nonfinite_batch"]) == 4
    metric.reset_state()
    metric.update_state(labels, {"arm0": good, "arm1": good})
    assert float(metric.result()["arm0_nonfinite_batch"]) == 0


def test_group_metrics_equal_keras_own_metrics_over_uneven_batches():
    # Keras's metric objects on each tower alone are the reference: the mean over examples
    # (a smaller last batch weighs less), and a one-tower group's names are unprefixed.
    rng = np.random.default_rng(0)
    batches = [
        (rng.integers(0, 4, size), rng.dirichlet(np.ones(4), (2, size)).astype("float32"))
        for size in (5, 5, 2)
    ]
    group, alone = GroupMetrics(["arm0", "arm1"]), GroupMetrics(["arm0"])
    reference = {
        tower: (keras.metrics.SparseCategoricalCrossentropy(),
                keras.metrics.SparseCategoricalAccuracy())
        for tower in range(2)
    }
    for labels, predictions in batches:
        group.update_state(labels, {"arm0": predictions[0], "arm1": predictions[1]})
        alone.update_state(labels, {"arm0": predictions[0]})
        for tower, metrics in reference.items():
            for metric in metrics:
                metric.update_state(labels, predictions[tower])
    result = group.result()
    for tower, (cross_entropy, accuracy) in reference.items():
        np.testing.assert_allclose(
            float(result[f"arm{tower}_cross_entropy"]), float(cross_entropy.result()), rtol=1e-6
        )
        np.testing.assert_allclose(
            float(result[f"arm{tower}_accuracy"]), float(accuracy.result()), rtol=1e-6
        )
    assert set(alone.result()) == {"cross_entropy", "accuracy", "nonfinite_batch"}
    np.testing.assert_allclose(
        float(alone.result()["cross_entropy"]), float(reference[0][0].result()), rtol=1e-6
    )


def test_optimizers_that_couple_towers_are_refused():
    with pytest.raises(ExperimentError, match="global_clipnorm=1.0 clips all towers"):
        towers.check_independent(keras.optimizers.SGD(global_clipnorm=1.0))
    towers.check_independent(keras.optimizers.SGD(clipnorm=1.0))  # per variable: fine
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())
    with pytest.raises(ExperimentError, match="loss scale is shared by all towers"):
        towers.check_independent(scaled)


def test_split_logs_keeps_one_towers_entries():
    logs = {"loss": 3.0, "arm0_loss": 1.0, "arm1_loss": 2.0, "arm10_loss": 9.0,
            "val_arm1_accuracy": 0.5, "val_loss": 4.0}
    split = towers.split_logs(logs, ["arm0", "arm1", "arm10"])
    assert split["arm1"] == {"loss": 2.0, "val_accuracy": 0.5}
    assert split["arm10"] == {"loss": 9.0}
    # The loss is the cross-entropy metric (a mean over examples), not Keras's per-output
    # loss, which weighs a smaller last batch as much as a full one.
    metric_logs = {"arm0_loss": 2.0, "arm0_cross_entropy": 2.1, "val_arm0_cross_entropy": 2.2,
                   "arm1_cross_entropy": 1.0}
    assert towers.split_logs(metric_logs, ["arm0", "arm1"])["arm0"] == {
        "loss": 2.1, "val_loss": 2.2
    }
    # A group of one is a single-output model: Keras does not prefix its logs.
    assert towers.split_logs({"loss": 1.0, "val_loss": 2.0}, ["arm0"]) == {
        "arm0": {"loss": 1.0, "val_loss": 2.0}
    }


def test_resume_trains_only_the_missing_arms_as_one_group(tmp_path):
    first = config.resolve(
        **TINY, initializers=SPECS[:1], logdir=str(tmp_path), experiment="grow"
    )
    runner.compare(first, progress=lambda _: None)
    grown = config.resolve(**TINY, initializers=SPECS, logdir=str(tmp_path), experiment="grow")
    lines = []
    entries = runner.compare(grown, progress=lines.append)
    assert [e["initializer"] for e in entries] == list(SPECS)
    assert [e["group_size"] for e in entries] == [1, 2, 2]
    assert sum("skipped" in line for line in lines) == 1
    stored = json.loads((tmp_path / "grow" / summary.JSON_NAME).read_text())
    assert len(stored["runs"]) == 3


def test_a_stack_gives_each_arm_the_loss_it_has_alone_when_its_softmax_saturates(data):
    # Keras computes the cross-entropy of a softmax output from its logits. A slice of a
    # stacked softmax would lose them: its probabilities get clipped, the loss capped at
    # -log(1e-7) = 16.1, and saturated outputs no gradient.
    settings = config.resolve(**TINY)
    losses = {}
    for engine in (towers.Towers, stacked.StackedArms):
        arms = _arms(settings, SPECS[:2], data)
        for arm in arms:
            output = arm.get_layer("output")
            output.kernel.assign(output.kernel.numpy() * 1e4)
        group = engine(arms, data.input_shape)
        towers.compile_group(group.model, keras.optimizers.SGD(), steps_per_execution=1)
        # The group's own loss (what training minimizes) and its metric of each tower.
        logs = group.model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
        losses[engine] = [logs[f"arm{index}_cross_entropy"] for index in range(2)]
        np.testing.assert_allclose(logs["loss"], sum(losses[engine]), rtol=1e-5)
    assert max(losses[towers.Towers]) > 20  # saturated: beyond the clipped loss's cap
    np.testing.assert_allclose(losses[stacked.StackedArms], losses[towers.Towers], rtol=1e-5)


def test_without_histograms_the_epoch_scalars_come_from_the_trained_stack(tmp_path):
    # With --histogram_every=0 the signal scalars are logged at each epoch's end, from the
    # arms' own models: the stack must have synced them, or they would repeat step 0's.
    settings = config.resolve(
        **{**TINY, "histogram_every": 0},
        initializers=SPECS[:2],
        logdir=str(tmp_path),
        experiment="scalars",
    )
    entries = runner.compare(settings, progress=lambda _: None)
    assert {entry["engine"] for entry in entries} == {"stacked"}
    events = event_accumulator.EventAccumulator(
        str(tmp_path / "scalars" / entries[0]["run_dir"]),
        size_guidance={event_accumulator.TENSORS: 0},
    ).Reload()
    logged = events.Tensors("activation_std/hidden_1")
    assert [event.step for event in logged] == [0, 10, 20]
    values = [float(tf.make_ndarray(event.tensor_proto)) for event in logged]
    assert values[0] != values[1] != values[2]
