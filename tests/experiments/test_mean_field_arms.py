"""Mean-field theory's arms in the harness: `critical(...)` and `mean_field(...)` (bare or
as `scheme:NAME(...)`), which draw kernels and biases, and their errors."""

import numpy as np
import pytest

from experiments import config, models, runner, specs
from experiments.errors import ExperimentError


def build(initializer, activation="tanh"):
    shape = (8, 8, 1)
    return models.initialize(
        "mlp", input_shape=shape, num_classes=4, x_sample=np.zeros((2, *shape), "float32"),
        depth=3, width=512, activation=activation, initializer=initializer,
        fallback="xavier_normal", seed=0,
    ).model


@pytest.mark.parametrize("spec", ["mean_field(sigma_w2=3.0, sigma_b2=0.1)",
                                  "scheme:mean_field(sigma_w2=3.0, sigma_b2=0.1)"])
def test_a_mean_field_arm_draws_the_kernels_and_biases_it_names(spec):
    assert specs.scheme_settings(spec) == ("mean_field", {"sigma_w2": 3.0, "sigma_b2": 0.1})
    model = build(spec)
    hidden = [layer for layer in model.layers if layer.name.startswith("hidden")]
    for layer in hidden:
        kernel = layer.kernel.numpy()
        assert np.var(kernel) * kernel.shape[0] == pytest.approx(3.0, rel=0.05)
    biases = np.concatenate([layer.bias.numpy() for layer in hidden])
    assert np.var(biases) == pytest.approx(0.1, rel=0.2)


def test_a_critical_arm_reads_the_models_activation():
    tanh = build("critical(sigma_b2=0.05)")
    kernel = tanh.get_layer("hidden_2").kernel.numpy()
    assert np.var(kernel) * 512 == pytest.approx(1.760955, rel=0.05)
    relu = build("critical", activation="relu")
    assert np.var(relu.get_layer("hidden_2").kernel.numpy()) * 512 == pytest.approx(2.0, rel=0.05)


def test_other_specs_are_not_schemes():
    assert specs.scheme_settings("xavier_normal") is None
    assert specs.scheme_settings("lsuv(tol=0.1)") is None
    with pytest.raises(ExperimentError, match="takes no parameter sigma"):
        config.resolve(initializers=("critical(sigma=0.1)",))


def test_a_sweep_of_mean_field_arms_trains_and_reports(tmp_path):
    settings = config.resolve(
        model=("mlp",), depth=(3,), width=(16,), activation=("tanh",),
        initializers=("critical(sigma_b2=0.05)", "mean_field(sigma_w2=4.0, sigma_b2=0.05)"),
        seeds=(0,), train_size=64, test_size=32, epochs=1, histogram_every=0, probe_size=32,
        logdir=str(tmp_path),
    )
    entries = runner.compare(settings, progress=lambda line: None)
    assert [entry["status"] for entry in entries] == ["ok", "ok"]
    report = next(tmp_path.glob("*/report.md")).read_text()
    assert "draw the biases too, N(0, sigma_b2)" in report
