"""Named experiments: each preset is a set of settings applied over the `lesson` defaults.

Explicit flags win over the preset. `config.describe_presets()` is what `--list_presets`
prints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from experiments.papers.isometry import PENNINGTON2017, XIAO2018
from experiments.papers.replications import (
    GLOROT2010,
    HE2015,
    KLAMBAUER2017,
    MISHKIN2016,
    RADFORD2019,
    SAXE2013,
    WANG2022,
    ZHANG2019,
    Replication,
)
from experiments.papers.trainability import SCHOENHOLZ2017
from experiments.papers.width_transfer import YANG2022


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named experiment: what it shows and the settings it changes."""

    name: str
    description: str
    settings: Mapping[str, Any]
    replication: Replication | None = None


# The defaults of `ExperimentConfig` are the lesson: the classic initializers side by
# side on a 5-layer tanh MLP, 3 seeds, about a minute on 2 CPU cores.
LESSON_INITIALIZERS = (
    "zeros",
    "random_uniform(minval=-0.1, maxval=0.1)",
    "random_normal(stddev=0.1)",
    "standard_uniform",
    "xavier_normal",
    "kaiming_normal",
)

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "lesson",
            "The classic initializers on a 5-layer tanh MLP: zeros never breaks symmetry, "
            "small random weights shrink activations layer by layer, xavier keeps them level.",
            {},
        ),
        Preset(
            "glorot2010",
            "Glorot & Bengio (2010), Table 1: standard U(+-1/sqrt(n)) vs normalized "
            "U(+-sqrt(6/(n_in+n_out))) init in tanh, softsign and sigmoid nets of 5 hidden "
            "layers: normalized beats standard for tanh, softsign comes near it, sigmoid is "
            "the worst; the step-0 activation and gradient profiles are Figs. 6-7.",
            {
                "initializers": ("standard_uniform", "xavier_uniform"),
                "activation": ("tanh", "softsign", "sigmoid"),
                "depth": 5,
                "width": 256,
                "optimizer": "sgd",
                "learning_rate": 0.01,
                "momentum": 0.9,
                "batch_size": 32,
                "epochs": 10,
                "train_size": 24000,
                "seeds": (0, 1, 2),
                "histogram_every": 500,
            },
            replication=GLOROT2010,
        ),
        Preset(
            "he2015",
            "He et al. (2015), Figs. 2-3: a depth sweep of plain ReLU MLPs trained with SGD; "
            "at moderate depth both kaiming (Var(W) = 2/fan_in) and xavier (Var(W) = "
            "2/(fan_in+fan_out)) train, kaiming earlier; at 30 layers xavier stalls and "
            "kaiming trains.",
            {
                "initializers": ("xavier_normal", "kaiming_normal(nonlinearity='relu')"),
                "activation": ("relu",),
                "depth": (10, 20, 30),
                "width": 256,
                "optimizer": "sgd",
                "learning_rate": 0.01,
                "momentum": 0.9,
                "epochs": 5,
                "train_size": 8000,
                "seeds": (0, 1, 2),
                "histogram_every": 200,
            },
            replication=HE2015,
        ),
        Preset(
            "klambauer2017",
            "Klambauer et al. (2017): a 32-layer SELU MLP; LeCun-normal init (Var(W) = "
            "1/fan_in) keeps activations at mean 0 and variance 1 through depth and trains, "
            "half that variance makes them shrink layer by layer, twice makes them grow.",
            {
                "initializers": (
                    "variance_scaling(scale=0.5)",
                    "lecun_normal",
                    "variance_scaling(scale=2.0)",
                ),
                "activation": ("selu",),
                "depth": (32,),
                "width": 256,
                "optimizer": "sgd",
                # At 0.01 every lecun_normal seed diverged within 50 steps.
                "learning_rate": 0.001,
                "momentum": 0.9,
                "epochs": 3,
                "train_size": 8000,
                "seeds": (0, 1, 2),
                "histogram_every": 250,
            },
            replication=KLAMBAUER2017,
        ),
        Preset(
            "mishkin2016",
            "Mishkin & Matas (2016): LSUV, a data-dependent init (orthonormal, then each "
            "layer scaled to unit output variance on one batch), against orthogonal, xavier "
            "and kaiming on a 20-layer ReLU MLP: LSUV trains at least as fast as the best.",
            {
                "initializers": (
                    "lsuv(tol=0.1)",
                    "orthogonal",
                    "xavier_normal",
                    "kaiming_normal(nonlinearity='relu')",
                ),
                "activation": ("relu",),
                "depth": (20,),
                "width": 256,
                "optimizer": "sgd",
                "learning_rate": 0.01,
                "momentum": 0.9,
                "epochs": 5,
                "train_size": 8000,
                "seeds": (0, 1, 2),
                "histogram_every": 250,
            },
            replication=MISHKIN2016,
        ),
        Preset(
            "saxe2013",
            "Saxe et al. (2013): deep linear networks (depths 4, 16, 64); with orthogonal init "
            "the steps to a loss criterion stay nearly flat with depth, with scaled Gaussian "
            "init (lecun_normal) they grow.",
            {
                "initializers": ("orthogonal", "lecun_normal"),
                "activation": ("linear",),
                "depth": (4, 16, 64),
                "width": 128,
                "optimizer": "sgd",
                "learning_rate": 0.001,
                "momentum": 0.9,
                "epochs": 20,
                "train_size": 2048,
                "seeds": (0, 1, 2),
                "histogram_every": 0,
            },
            replication=SAXE2013,
        ),
        Preset(
            "xiao2018",
            "Xiao et al. (2018): a 128-layer vanilla tanh CNN (experiments.papers."
            "architectures:xiao2018_cnn) at the edge of chaos (sigma_b2 = 1e-5); "
            "delta-orthogonal kernels train it, Gaussian kernels of the same variance learn "
            "nothing.",
            {
                "initializers": (
                    "critical(sigma_b2=1e-05, distribution='orthogonal')",
                    "critical(sigma_b2=1e-05)",
                ),
                "model": ("experiments.papers.architectures:xiao2018_cnn",),
                "dataset": "mnist5k",
                "train_size": 4000,
                "test_size": 1000,
                "optimizer": "sgd",
                "learning_rate": 0.001,
                "momentum": 0.9,
                "epochs": 8,
                "seeds": (0, 1, 2),
                "histogram_every": 250,
                "jacobian_spectrum": 16,
            },
            replication=XIAO2018,
        ),
        Preset(
            "schoenholz2017",
            "Schoenholz et al. (2017), Deep Information Propagation, Figs. 5-6: tanh MLPs of "
            "depths 6 to 48 over a grid of weight variances at sigma_b2 = 0.05 (the "
            "mean_field(...) arms of one depth train together); the trainable depth peaks at "
            "the edge of chaos, and 6 xi_c separates the cells that train from those that do "
            "not.",
            {
                "initializers": tuple(
                    f"mean_field(sigma_w2={sigma_w2}, sigma_b2=0.05)"
                    for sigma_w2 in (0.5, 1.0, 1.25, 1.76, 2.5, 4.0)
                ),
                "model": ("mlp",),
                "activation": "tanh",
                "depth": (6, 12, 24, 48),
                "width": 128,
                "dataset": "mnist5k",
                "train_size": 4000,
                "test_size": 1000,
                "optimizer": "sgd",
                "learning_rate": 0.003,
                "momentum": 0.9,
                "batch_size": 64,
                "epochs": 4,
                "seeds": (0, 1),
                "histogram_every": 0,
            },
            replication=SCHOENHOLZ2017,
        ),
        Preset(
            "pennington2017",
            "Pennington et al. (2017), Resurrecting the sigmoid: 64-layer tanh MLPs at the "
            "edge of chaos (sigma_b2 = 1e-5), orthogonal against Gaussian weights of the same "
            "variance; the orthogonal network's input-output Jacobian spectrum at step 0 is far "
            "narrower, and it trains faster.",
            {
                "initializers": (
                    "critical(sigma_b2=1e-05, distribution='orthogonal')",
                    "critical(sigma_b2=1e-05)",
                ),
                "model": ("mlp",),
                "activation": "tanh",
                "depth": 64,
                "width": 128,
                "dataset": "mnist5k",
                "train_size": 4000,
                "test_size": 1000,
                "optimizer": "sgd",
                "learning_rate": 0.003,
                "momentum": 0.9,
                "batch_size": 64,
                "epochs": 3,
                "seeds": (0, 1, 2),
                "histogram_every": 0,
                "jacobian_spectrum": 16,
            },
            replication=PENNINGTON2017,
        ),
        Preset(
            "zhang2019",
            "Zhang et al. (2019), Fixup: a residual MLP of 16 blocks without normalization; "
            "He's init multiplies the residual stream at every block and diverges, "
            "scheme:fixup (branch outputs and read-out zero) trains it.",
            {
                "initializers": ("he_normal", "scheme:fixup"),
                "model": ("resmlp",),
                "depth": 16,
                "width": 64,
                "activation": "relu",
                "normalization": "none",
                "optimizer": "sgd",
                "learning_rate": 0.05,
                "momentum": 0.9,
                "epochs": 5,
                "train_size": 8000,
                "seeds": (0, 1, 2),
                "histogram_every": 250,
            },
            replication=ZHANG2019,
        ),
        Preset(
            "radford2019",
            "Radford et al. (2019), GPT-2: pre-LN Transformer language models of 2, 4 and 8 "
            "layers on the Sonnets; unscaled N(0, 0.02) lets the residual stream grow with "
            "depth, scheme:gpt2 (residual outputs / sqrt(2L)) keeps it level and trains at "
            "least as well.",
            {
                "initializers": ("random_normal(stddev=0.02)", "scheme:gpt2"),
                "model": ("transformer",),
                "dataset": "sonnets",
                "sequence_length": 64,
                "depth": (2, 4, 8),
                "width": 64,
                "heads": 4,
                "layer_norm": "pre",
                "activation": "gelu",
                "optimizer": "adam",
                "learning_rate": 0.003,
                "epochs": 6,
                "seeds": (0, 1, 2),
                "histogram_every": 100,
                "probe_size": 64,
            },
            replication=RADFORD2019,
        ),
        Preset(
            "wang2022",
            "Wang et al. (2022), DeepNet: post-LN Transformer language models of 2 and 12 "
            "layers on the Sonnets, Adam without warm-up; at 12 layers xavier_normal learns "
            "nothing past the characters' frequencies, scheme:deepnet (alpha in the blocks, "
            "beta at init) trains.",
            {
                "initializers": ("xavier_normal", "scheme:deepnet"),
                "model": ("transformer",),
                "dataset": "sonnets",
                "sequence_length": 64,
                "depth": (2, 12),
                "width": 64,
                "heads": 4,
                "layer_norm": "post",
                "activation": "gelu",
                "optimizer": "adam",
                "learning_rate": 0.001,
                "epochs": 2,
                "seeds": (0, 1, 2),
                "histogram_every": 40,
                "probe_size": 64,
            },
            replication=WANG2022,
        ),
        Preset(
            "yang2022",
            "Yang et al. (2022), Tensor Programs V, Fig. 3: 2-layer ReLU MLPs of width 64 to "
            "1,024 on 4,000 MNIST digits over a log2 grid of Adam learning rates; under the "
            "standard parametrization the best rate shifts as the width grows, under muP "
            "(base width 64, the read-out started at zero) it stays put and wider is better.",
            {
                "initializers": ("he_normal",),
                "model": ("mlp",),
                "dataset": "mnist5k",
                "train_size": 4000,
                "test_size": 1000,
                "depth": 2,
                "width": (64, 128, 256, 512, 1024),
                "activation": "relu",
                "parametrization": ("sp", "mup"),
                "base_width": 64,
                "readout_zero_init": True,
                "optimizer": "adam",
                "learning_rate": tuple(2.0**exponent for exponent in range(-13, -3)),
                "batch_size": 64,
                "epochs": 3,
                "seeds": (0, 1, 2, 3),
                "histogram_every": 125,
                "probe_size": 64,
            },
            replication=YANG2022,
        ),
    )
}
