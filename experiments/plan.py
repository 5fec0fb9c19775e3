"""The plan of a comparison: which runs there are and how they group, before anything trains.

A run is one initializer, seed and cell (`RunKey`); a `Group` is the runs that train
together: the initializers and learning rates of one cell and seed. Arms of different
learning rates train together through one optimizer per arm (`engine.optimizers`), so a
learning-rate sweep costs little more than one rate. The runner plans and the engine's
executors (in this process, or Ray's tasks in `experiments.engine.cluster`) train what was
planned; both import these types from here, so neither imports the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from experiments.config import Cell, ExperimentConfig

RunKey = tuple[str, int, Cell]  # initializer spec, seed, cell


@dataclasses.dataclass(frozen=True)
class Group:
    """Runs that train together: arms of one cell (but its learning rate) and seed.

    Attributes:
        cell: what the arms share; its learning rate is the first arm's.
        seed: the seed.
        arms: (initializer spec, learning rate) of each arm, in plan order.
    """

    cell: Cell
    seed: int
    arms: tuple[tuple[str, float], ...]

    def runs(self) -> list[RunKey]:
        return [
            (spec, self.seed, dataclasses.replace(self.cell, learning_rate=rate))
            for spec, rate in self.arms
        ]


def plan(config: ExperimentConfig, done: Collection[RunKey] = ()) -> list[Group]:
    """The groups of a comparison, in order (cell, then seed), without the runs in `done`;
    with `config.group_arms` off, every group holds one run."""
    together = config.group_arms and len(config.learning_rate) > 1
    grouped: dict[tuple, list[RunKey]] = {}  # by what the group's runs share, in plan order
    for cell in config.cells():
        for seed in config.seeds:
            for spec in config.initializers:
                key = (spec, seed, cell)
                if not config.group_arms:
                    shared = key
                elif together:  # every learning rate of the cell trains in one group
                    shared = (dataclasses.replace(cell, learning_rate=None), seed)
                else:
                    shared = (cell, seed)
                # Registered even when done: a resumed plan keeps the groups' order.
                runs = grouped.setdefault(shared, [])
                if key not in done:
                    runs.append(key)
    return [
        Group(runs[0][2], runs[0][1], tuple((spec, cell.learning_rate) for spec, _, cell in runs))
        for runs in grouped.values() if runs
    ]


def all_runs(config: ExperimentConfig) -> list[RunKey]:
    """Every run of the comparison, in plan order: (initializer, seed, cell)."""
    grouped = plan(dataclasses.replace(config, group_arms=True))
    return [key for group in grouped for key in group.runs()]
