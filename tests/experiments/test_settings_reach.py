"""Settings reach what trains, seen from inside `fit` by a Keras callback (`TrainingSeen`):
--fallback_initializer the kernels an initializer leaves to it, and the optimizer settings
the towers' optimizer. test_sweeps.py checks the optimizer flags on the command line and
what two learning rates change; test_towers.py the stacked arms' optimizer."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from experiments import config, runner
from tests.experiments.test_own_models import _hparams

TINY = dict(
    seeds=(0,),
    depth=1,
    width=4,
    train_size=64,
    test_size=32,
    epochs=1,
    batch_size=32,
    histogram_every=0,
    probe_size=32,
)
FALLBACK = "constant(value=0.5)"


class TrainingSeen(keras.callbacks.Callback):
    """What each group's `fit` trains with, one dict per fit: the optimizer's class,
    learning rate and momentum (None for optimizers without one); the group's trainable
    weights at the start, after the first call of the train function (and how many steps
    that made) and at the end; each tower's weights at the start, by path (towers only:
    stacked arms' weights are the stack's)."""

    def __init__(self):
        super().__init__()
        self.fits = []

    def _weights(self):
        return [keras.ops.convert_to_numpy(w) for w in self.model.trainable_weights]

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        self.fits.append(
            {
                "optimizer": type(optimizer),
                "learning_rate": float(optimizer.learning_rate),
                "momentum": getattr(optimizer, "momentum", None),
                "start": self._weights(),
                "towers": {
                    name: {
                        w.path: keras.ops.convert_to_numpy(w)
                        for w in self.model.get_layer(name).weights
                    }
                    for name in self.model.output_names
                },
            }
        )

    def on_train_batch_end(self, batch, logs=None):
        fit = self.fits[-1]
        if "first_step" not in fit:
            fit["steps_at_first_batch_end"] = int(self.model.optimizer.iterations.numpy())
            fit["first_step"] = self._weights()

    def on_train_end(self, logs=None):
        self.fits[-1]["end"] = self._weights()


@pytest.fixture(scope="module")
def fallback_cnn(tmp_path_factory):
    """dirac (convolutions only) and xavier_normal on the CNN, with a constant fallback and
    sgd at a rate and momentum of their own."""
    settings = config.resolve(
        **TINY,
        model="cnn",
        initializers=("dirac", "xavier_normal"),
        fallback_initializer=FALLBACK,
        optimizer="sgd",
        learning_rate=0.05,
        momentum=0.5,
        logdir=str(tmp_path_factory.mktemp("fallback")),
    )
    seen, lines = TrainingSeen(), []
    entries = runner.compare(settings, callbacks=[seen], progress=lines.append)
    return settings, entries, lines, seen.fits


def test_optimizer_settings_reach_the_optimizer_of_towers(fallback_cnn):
    _, entries, _, fits = fallback_cnn
    assert {e["engine"] for e in entries} == {"towers"}
    assert len(fits) == 1
    assert fits[0]["optimizer"] is keras.optimizers.SGD
    assert fits[0]["learning_rate"] == pytest.approx(0.05, rel=1e-6)
    assert fits[0]["momentum"] == 0.5


def test_the_fallback_given_draws_the_kernels_the_initializer_leaves(fallback_cnn):
    settings, entries, lines, fits = fallback_cnn
    dirac, xavier = fits[0]["towers"]["arm0"], fits[0]["towers"]["arm1"]
    width, classes = TINY["width"], 9
    # dirac cannot draw the Dense read-out: it trains from the fallback's constant...
    np.testing.assert_array_equal(dirac["output/kernel"], np.full((width, classes), 0.5))
    # ...while the convolution is dirac's own: the identity on its centre tap (one input
    # channel: filter 0 passes it on, the others are zero).
    expected = np.zeros((3, 3, 1, width))
    expected[1, 1, 0, 0] = 1.0
    np.testing.assert_array_equal(dirac["hidden_1/kernel"], expected)
    assert not np.allclose(xavier["output/kernel"], 0.5)  # xavier_normal draws every kernel
    # Equal read-out weights and zero biases give every class the same probability: the
    # dirac arm starts at ln 9, the cross-entropy of a uniform guess over the 9 classes.
    assert entries[0]["initial_loss"] == pytest.approx(np.log(classes), rel=1e-5)
    assert entries[1]["initial_loss"] != pytest.approx(np.log(classes), rel=1e-3)
    # and the run says so: summary, run details, HParams, the run's line.
    assert [e["fallback_layers"] for e in entries] == [["output"], []]
    root = Path(settings.logdir) / settings.experiment
    details = json.loads((root / entries[0]["run_dir"] / runner.RUN_DETAILS).read_text())
    assert details["fallback"] == FALLBACK
    assert _hparams(root / entries[0]["run_dir"])["fallback"] == FALLBACK
    assert lines[0].endswith(f"; fallback {FALLBACK} on output")
    report = (root / "report.md").read_text()
    assert f"layers given `{FALLBACK}`" in report and "| `dirac` | `output` |" in report
