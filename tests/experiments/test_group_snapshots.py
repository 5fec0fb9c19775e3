"""A group's one compiled snapshot (`experiments.engine.snapshots`) logs for each arm what
`keras_inits.SignalHistograms` logs for that arm's model alone: the same statistics, the
same buckets, the same TensorBoard tags and values, on both engines, after training."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from experiments.engine import stacked, towers
from experiments.engine.snapshots import GroupSnapshots
from keras_inits import SignalHistograms

PROBE, CLASSES = 24, 3
# Different scales per arm, so that an arm logged with another's signals would show.
INITIALIZERS = (
    "glorot_uniform",
    keras.initializers.RandomNormal(stddev=0.5, seed=1),
    keras.initializers.RandomUniform(-0.05, 0.05, seed=2),
)


def _mlp(initializer) -> keras.Model:
    inputs = keras.Input((4, 3))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu", kernel_initializer=initializer)(x)
    x = keras.layers.Dense(16, activation="tanh", kernel_initializer=initializer)(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", kernel_initializer=initializer)(x)
    return keras.Model(inputs, outputs)


def _cnn(initializer) -> keras.Model:
    inputs = keras.Input((4, 3))
    x = keras.layers.Conv1D(8, 2, activation="relu", kernel_initializer=initializer)(inputs)
    x = keras.layers.Conv1D(8, 2, activation="tanh", kernel_initializer=initializer)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", kernel_initializer=initializer)(x)
    return keras.Model(inputs, outputs)


def _events(run_dir) -> dict[str, list[tuple[int, np.ndarray]]]:
    accumulator = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    ).Reload()
    return {
        tag: [(e.step, tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]
        for tag in accumulator.Tags()["tensors"]
    }


def _group(build, engine_type, tmp_path):
    """A trained group of 3 arms and, for each arm, its group and lone `SignalHistograms`."""
    keras.utils.set_random_seed(0)
    arms = [build(initializer) for initializer in INITIALIZERS]
    engine = engine_type(arms, (4, 3))
    optimizer = keras.optimizers.SGD(0.1)
    towers.compile_group(engine.model, optimizer, steps_per_execution=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(PROBE, 4, 3)).astype("float32")
    y = rng.integers(0, CLASSES, size=PROBE)
    names = [arm.name for arm in arms]
    engine.model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    engine.sync(names)  # the stack's weights into the arms' models, for the lone callbacks

    def callbacks(folder):
        made = []
        for arm in arms:
            signals = SignalHistograms(
                x, y, log_dir=str(tmp_path / folder / arm.name), loss=towers.LOSS, subdir=""
            )
            signals.set_model(arm)
            made.append(signals)
        return made

    return engine, names, callbacks("group"), callbacks("alone")


@pytest.mark.parametrize(
    "build, engine_type",
    [(_mlp, stacked.StackedArms), (_cnn, towers.Towers)],
    ids=["stacked", "towers"],
)
def test_each_arm_logs_what_its_own_callback_logs(build, engine_type, tmp_path):
    engine, names, grouped, alone = _group(build, engine_type, tmp_path)
    if engine_type is stacked.StackedArms:
        assert stacked.can_stack(engine.arms, engine.model.optimizer)
    snapshots = GroupSnapshots(engine, names, grouped).take(
        7, names, scalars=True, histograms=True
    )
    for name, lone in zip(names, alone, strict=True):
        own = lone.snapshot(7)
        ours = snapshots[name]
        assert ours.layers == own.layers
        for mine, theirs in zip(ours.statistics, own.statistics, strict=True):
            assert mine.keys() == theirs.keys()
            for key, value in theirs.items():
                if value is None:
                    assert mine[key] is None
                else:
                    assert mine[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
        assert ours.histograms.keys() == own.histograms.keys()
        for tag, buckets in own.histograms.items():
            span = np.ptp(buckets[:, :2])  # edges near 0: float32 round-off of the range
            np.testing.assert_allclose(
                ours.histograms[tag][:, :2], buckets[:, :2], rtol=1e-5, atol=1e-5 * span
            )
            assert np.abs(ours.histograms[tag][:, 2] - buckets[:, 2]).sum() <= 2, tag
    for name in names:
        mine, theirs = _events(tmp_path / "group" / name), _events(tmp_path / "alone" / name)
        # 3 layers x (4 histograms, 3 std scalars), dead units (relu), saturation (tanh).
        assert mine.keys() == theirs.keys() and len(mine) == 3 * (4 + 3) + 2
        for tag, written in theirs.items():
            (step, value), = written
            (my_step, mine_value), = mine[tag]
            assert my_step == step == 7
            np.testing.assert_allclose(mine_value, value, rtol=1e-4, atol=1e-6)
    weight_stds = [snapshots[name].statistics[0]["weight_std"] for name in names]
    assert len({round(std, 5) for std in weight_stds}) == 3  # each arm's own weights


def test_only_the_arms_named_are_logged(tmp_path):
    engine, names, grouped, _ = _group(_mlp, stacked.StackedArms, tmp_path)
    group = GroupSnapshots(engine, names, grouped)
    group.take(0, names, scalars=True, histograms=True)
    taken = group.take(5, [names[1]], scalars=True, histograms=False)
    assert list(taken) == [names[1]] and group.last_histograms == dict.fromkeys(names, 0)
    for name in names:
        logged = _events(tmp_path / "group" / name).values()
        steps = {step for events in logged for step, _ in events}
        assert steps == ({0, 5} if name == names[1] else {0})
    histogram_steps = {
        step
        for tag, events in _events(tmp_path / "group" / names[1]).items()
        if tag.startswith("activations/")
        for step, _ in events
    }
    assert histogram_steps == {0}  # step 5: scalars only


def test_towers_with_the_first_arm_frozen_still_log_the_others_gradients(tmp_path):
    """The towers' shared probe is the first training arm's: with arm 0 frozen (diverged),
    the others keep their kernel gradients."""
    engine, names, grouped, alone = _group(_cnn, towers.Towers, tmp_path)
    group = GroupSnapshots(engine, names, grouped)
    group.take(0, names, scalars=True, histograms=False)
    towers.freeze(engine.model, names[0])
    taken = group.take(1, names[1:], scalars=True, histograms=False)
    for name, lone in zip(names[1:], alone[1:], strict=True):
        own = lone.snapshot(1).statistics
        for mine, theirs in zip(taken[name].statistics, own, strict=True):
            assert theirs["weight_gradient_std"] is not None
            assert mine["weight_gradient_std"] == pytest.approx(
                theirs["weight_gradient_std"], rel=1e-5
            )
