"""Settings: spec splitting, presets, explicit flags winning, derived names, validation."""

import copy

import pytest
from absl import flags

from experiments import compare, config
from experiments.errors import ExperimentError
from experiments.papers import presets


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
    assert (resolved.depth, resolved.activation, resolved.model) == ((5,), ("tanh",), ("mlp",))
    assert resolved.group_arms and resolved.cells() == [
        config.Cell("mlp", 5, 256, "tanh", None, "sgd", 0.01, 32)
    ]
    assert resolved.swept() == ()
    # Three seeds by default; enough data not to be memorized in the default budget.
    assert resolved.seeds == (0, 1, 2) and (resolved.train_size, resolved.epochs) == (24000, 3)


def test_presets_set_flags_and_explicit_flags_win():
    he = config.resolve("he2015")
    assert (he.depth, he.activation, he.optimizer) == ((10, 20, 30), ("relu",), ("sgd",))
    assert len(he.initializers) == 2
    glorot = config.resolve("glorot2010")
    assert set(glorot.activation) == {"tanh", "sigmoid", "softsign"}
    mine = config.resolve("he2015", depth=22)  # a bare value is a list of one
    assert mine.depth == (22,) and mine.activation == ("relu",)


def test_experiment_name_comes_from_changed_settings_not_the_clock():
    assert config.resolve(depth=5).experiment == "lesson"  # equal to the preset's value
    named = config.resolve(depth=3, seeds=(0, 1))
    assert named.experiment == "lesson-depth=3-seeds=0,1"
    assert config.resolve(depth=3, seeds=(0, 1)).experiment == named.experiment
    specs = config.resolve(initializers=("random_uniform(minval=-1, maxval=1)",))
    assert specs.experiment.startswith("lesson-initializers=") and "(" not in specs.experiment
    assert config.resolve(experiment="mine").experiment == "mine"
    # Where runs execute does not change their results, so not the folder either.
    assert config.resolve(strategy="mirrored", ray_address="auto").experiment == "lesson"


@pytest.mark.parametrize(
    ("preset", "settings", "message"),
    [
        ("nope", {}, "Unknown preset 'nope'"),
        ("lesson", {"initializers": ("xavier_normall",)}, "Unknown initializer 'xavier_normall'"),
        ("lesson", {"depth": 0}, "--depth must be integers >= 1, got 0"),
        ("lesson", {"depth": (3, 0)}, "--depth must be integers >= 1, got 0"),
        ("lesson", {"depth": (3, 3)}, "--depth lists a value twice: 3,3"),
        ("lesson", {"width": ()}, "--width must list at least one value"),
        ("lesson", {"learning_rate": (0.1, -1.0)}, "--learning_rate must be numbers > 0"),
        ("lesson", {"batch_size": (32, 2.5)}, "--batch_size must be integers >= 1, got 2.5"),
        ("lesson", {"optimizer": ("adam", "sgdd")}, "Unknown Keras optimizer 'sgdd'"),
        ("lesson", {"model": ("mlp", "nope")}, "Unknown --model 'nope'"),
        ("lesson", {"activation": ("tanhh",)}, "Unknown Keras activation 'tanhh'"),
        ("lesson", {"optimizer": "sgdd"}, "Unknown Keras optimizer 'sgdd'"),
        ("lesson", {"histogram_every": -1}, "--histogram_every must be an integer >= 0"),
        ("lesson", {"seeds": (2**32,)}, r"--seeds must be integers in \[0, 2147483647\]"),
        ("lesson", {"dataset": "imagenet"}, "Unknown dataset 'imagenet'"),
        ("lesson", {"dataset": "npz:/no/such/file.npz"}, "Cannot read npz dataset"),
        ("lesson", {"ray_address": "auto", "cpus_per_task": 0}, "--cpus_per_task must be > 0"),
        ("lesson", {"ray_address": "auto", "task_retries": -1}, "--task_retries must be an"),
        ("lesson", {"epochs": 1.5}, "--epochs must be an integer >= 1, got 1.5"),
        ("lesson", {"probe_size": True}, "--probe_size must be an integer >= 1, got True"),
        ("lesson", {"seeds": ("0",)}, r"--seeds must be integers in \[0, 2147483647\], got '0'"),
        ("lesson", {"gpus_per_task": 1}, "--gpus_per_task only applies to runs on a Ray"),
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
            "--learning_rate=0.1,0.01",
            "--batch_size=16",
            "--nogroup_arms",
        ]
    )
    settings = compare.settings_from_flags(values)
    assert settings["initializers"] == ("xavier_normal", "random_uniform(minval=-0.1, maxval=0.1)")
    assert settings["activation"] == ("tanh", "sigmoid") and settings["seeds"] == (0, 1)
    assert settings["depth"] == (3,) and settings["learning_rate"] == (0.1, 0.01)
    assert settings["batch_size"] == (16,) and settings["group_arms"] is False
    assert "width" not in settings  # not given: the preset decides
    resolved = config.resolve(values.preset, **settings)
    assert resolved.width == (256,) and resolved.optimizer == ("sgd",)
    # The grid: activation x learning rate (the last setting varies fastest).
    assert [(cell.activation, cell.learning_rate) for cell in resolved.cells()] == [
        ("tanh", 0.1), ("tanh", 0.01), ("sigmoid", 0.1), ("sigmoid", 0.01)
    ]
    assert resolved.swept() == ("activation", "learning_rate")


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--depth=3,x", "--depth must be comma-separated integers, got 3,x"),
        ("--learning_rate=fast", "--learning_rate must be comma-separated numbers, got fast"),
        ("--seeds=0,one", "--seeds must be comma-separated integers, got 0,one"),
    ],
)
def test_list_flags_with_bad_values_raise_one_line_errors(flag, message):
    values = copy.deepcopy(flags.FLAGS)
    values(["compare", flag])
    with pytest.raises(ExperimentError, match=message):
        compare.settings_from_flags(values)


def test_cells_of_your_own_model_have_no_architecture():
    mixed = config.resolve(
        model=("mlp", "tests.experiments.custom_models:small_cnn"), depth=(2, 3)
    )
    assert [(cell.model, cell.depth, cell.activation) for cell in mixed.cells()] == [
        ("mlp", 2, "tanh"),
        ("mlp", 3, "tanh"),
        ("tests.experiments.custom_models:small_cnn", None, None),
    ]
    assert mixed.swept() == ("model", "depth", "width", "activation")
    own = config.resolve("he2015", model="tests.experiments.custom_models:small_cnn")
    assert own.depth == (None,) and len(own.cells()) == 1


def test_describe_lists_every_preset():
    text = config.describe_presets()
    for name in presets.PRESETS:
        assert f"{name}: " in text
    assert "--depth=10,20,30" in text
