"""The optimizer of a group of arms: Keras's own, or one per arm when the arms need their own.

Arms of one group share a compiled step. When they also share their optimizer's settings
(one learning rate, the standard parametrization, no global norm to clip), one Keras
optimizer updates them all: each variable from its own gradient and state, as alone
(`towers.check_independent`). Otherwise each arm gets its own copies of the optimizer:
its learning rate, muP's per-weight multipliers (`keras_inits.mup.optimizer_groups`), its
own global norm to clip, gathered in one `GroupOptimizer`, Keras's `MultiOptimizer`.
Each copy counts its own steps and keeps its own slots, so every arm takes the steps it
would take alone (`tests/experiments/test_towers.py` compares them with lone runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras

import keras_inits.mup


def make_optimizer(
    name: str,
    learning_rate: float,
    momentum: float,
    clipnorm: float = 0.0,
    global_clipnorm: float = 0.0,
) -> keras.optimizers.Optimizer:
    """The Keras optimizer `name`; `momentum` applies to those that have one (sgd, rmsprop);
    `clipnorm` or `global_clipnorm` (Keras's arguments) clip the gradients, 0 not."""
    optimizer = keras.optimizers.get(name)
    config = optimizer.get_config()
    config["learning_rate"] = learning_rate
    if "momentum" in config:
        config["momentum"] = momentum
    config["clipnorm"] = clipnorm or None
    config["global_clipnorm"] = global_clipnorm or None
    return optimizer.from_config(config)


def needs_own(rates: Sequence[float], mup: Sequence[bool], global_clipnorm: float) -> bool:
    """Whether the arms (their learning `rates`, whether each is in muP) need optimizers of
    their own: different rates, muP's per-weight rates, or one global norm each."""
    return len(set(rates)) > 1 or any(mup) or (bool(global_clipnorm) and len(rates) > 1)


def group_optimizer(
    arms: Sequence[keras.Model],
    rates: Sequence[float],
    make: Callable[[float], keras.optimizers.Optimizer],
) -> keras.optimizers.Optimizer:
    """One optimizer for the arms (models, in muP when `keras_inits.mup.parametrize` put them
    there), arm i at learning rate `rates[i]`; `make(rate)` makes a fresh Keras optimizer.
    Keras's own when one serves them all, else a `GroupOptimizer`."""
    mup = [getattr(arm, "_keras_inits_mup", None) is not None for arm in arms]
    probe = make(rates[0])
    if not needs_own(rates, mup, probe.global_clipnorm or 0.0):
        return probe
    assignment = []
    for arm, rate, in_mup in zip(arms, rates, mup, strict=True):
        if in_mup:
            found = keras_inits.mup.optimizer_groups(arm, make(rate))
            assignment += [(copy, variables) for copy, variables, _ in found]
        else:
            assignment.append((make(rate), list(arm.trainable_variables)))
    return GroupOptimizer(assignment)


class GroupOptimizer(keras.optimizers.MultiOptimizer):
    """Keras's `MultiOptimizer` with each variable's optimizer given by the variable itself,
    not its path (the towers' layers share names, so their paths can collide), and a
    trainable set that may shrink: a diverged tower's weights leave it (`towers.freeze`),
    and only the optimizers of the others step.

    Args:
        assignment: (optimizer, its variables) pairs; every variable in exactly one.
    """

    def __init__(self, assignment: Sequence[tuple[keras.optimizers.Optimizer, Sequence[Any]]]):
        owner = {}
        for optimizer, variables in assignment:
            for variable in variables:
                if id(variable) in owner:
                    raise ValueError(f"{variable.path} is given two optimizers.")
                owner[id(variable)] = optimizer

        def optimizer_of(variable: Any) -> keras.optimizers.Optimizer:
            if id(variable) not in owner:
                raise ValueError(f"{variable.path} has no optimizer in this group.")
            return owner[id(variable)]

        super().__init__(optimizer_of, name="group_optimizer")

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> None:
        if not self.built or trainable_variables is None:
            return super().apply(grads, trainable_variables)
        # Keras's own apply wants every variable it was built with; a frozen tower's are gone.
        shares: list[list[tuple[Any, Any]]] = [[] for _ in self._inner_optimizers]
        for grad, variable in zip(grads, trainable_variables, strict=True):
            shares[self._var_to_optimizer_idx[self._var_key(variable)]].append((grad, variable))
        for optimizer, share in zip(self._inner_optimizers, shares, strict=True):
            if share:
                optimizer.apply([grad for grad, _ in share], [variable for _, variable in share])
        self._iterations.assign_add(1)
        return None
