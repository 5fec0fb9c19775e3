"""Settings: spec splitting, presets, explicit flags winning, derived names, validation."""

import copy

import pytest
from absl import flags

from experiments import compare, config, presets
from experiments.errors import ExperimentError


def test_split_specs_keeps_commas_inside_parentheses_and_quotes():
    text = "xavier_normal, random_uniform(minval=-0.1, maxval=0.1),constant(value=1)"
    assert config.split_specs(text) == (
        "xavier_normal",
        "random_uniform(minval=-0.1, maxval=0.1)",
        "constant(value=1)",
    )
    assert config.split_specs("kaiming_normal(mode='fan_out', nonlinearity='tanh')") == (
        "kaiming_normal(mode='fan_out', nonlinearity='tanh')",
    )


def test_lesson_is_the_default():
    resolved = config.resolve()
    assert resolved.preset == "lesson" and resolved.experiment == "lesson"
    assert resolved.initializers == presets.LESSON_INITIALIZERS
    assert (resolved.depth, resolved.activation, resolved.model) == (5, ("tanh",), "mlp")


def test_presets_set_flags_and_explicit_flags_win():
    he = config.resolve("he2015")
    assert (he.depth, he.activation, he.optimizer) == (30, ("relu",), "sgd")
    assert len(he.initializers) == 2
    glorot = config.resolve("glorot2010")
    assert set(glorot.activation) == {"tanh", "sigmoid", "softsign"}
    mine = config.resolve("he2015", depth=22)
    assert mine.depth == 22 and mine.activation == ("relu",)


def test_experiment_name_comes_from_changed_settings_not_the_clock():
    assert config.resolve(depth=5).experiment == "lesson"  # equal to the preset's value
    named = config.resolve(depth=3, seeds=(0, 1))
    assert named.experiment == "lesson-depth=3-seeds=0,1"
    assert config.resolve(depth=3, seeds=(0, 1)).experiment == named.experiment
    specs = config.resolve(initializers=("random_uniform(minval=-1, maxval=1)",))
    assert specs.experiment.startswith("lesson-initializers=") and "(" not in specs.experiment
    assert config.resolve(experiment="mine").experiment == "mine"


@pytest.mark.parametrize(
    ("preset", "settings", "message"),
    [
        ("nope", {}, "Unknown preset 'nope'"),
        ("lesson", {"initializers": ("xavier_normall",)}, "Unknown initializer 'xavier_normall'"),
        ("lesson", {"depth": 0}, "--depth must be >= 1, got 0"),
        ("lesson", {"activation": ("tanhh",)}, "Unknown Keras activation 'tanhh'"),
        ("lesson", {"optimizer": "sgdd"}, "Unknown Keras optimizer 'sgdd'"),
        ("lesson", {"histogram_every": -1}, "--histogram_every must be >= 0"),
        ("lesson", {"seeds": (2**32,)}, r"--seeds must be integers in \[0, 2147483647\]"),
        ("lesson", {"dataset": "imagenet"}, "Unknown dataset 'imagenet'"),
        ("lesson", {"dataset": "npz:/no/such/file.npz"}, "Cannot read npz dataset"),
    ],
)
def test_bad_settings_raise_one_line_errors(preset, settings, message):
    with pytest.raises(ExperimentError, match=message) as error:
        config.resolve(preset, **settings)
    assert "\n" not in str(error.value)


def test_flags_parse_into_settings():
    values = copy.deepcopy(flags.FLAGS)
    values(
        [
            "compare",
            "--preset=he2015",
            "--initializers=xavier_normal,random_uniform(minval=-0.1, maxval=0.1)",
            "--depth=3",
            "--activation=tanh,sigmoid",
            "--seeds=0,1",
            "--learning_rate=0.1",
        ]
    )
    settings = compare.settings_from_flags(values)
    assert settings["initializers"] == ("xavier_normal", "random_uniform(minval=-0.1, maxval=0.1)")
    assert settings["activation"] == ("tanh", "sigmoid") and settings["seeds"] == (0, 1)
    assert settings["depth"] == 3 and settings["learning_rate"] == 0.1
    assert "width" not in settings  # not given: the preset decides
    resolved = config.resolve(values.preset, **settings)
    assert resolved.width == 256 and resolved.optimizer == "sgd"


def test_describe_lists_every_preset():
    text = presets.describe()
    for name in presets.PRESETS:
        assert f"{name}: " in text
    assert "--depth=30" in text
