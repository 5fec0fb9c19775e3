"""The plan of a comparison: which runs there are and how they group, before anything trains.

A run is one initializer, seed and cell (`RunKey`); a `Group` is the runs that train
together, the initializers of one cell and seed. The runner plans and the engine's
executors (in this process, or Ray's tasks in `experiments.engine.cluster`) train
what was planned; both import these types from here, so neither imports the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from experiments.config import Cell, ExperimentConfig

RunKey = tuple[str, int, Cell]  # initializer spec, seed, cell


@dataclasses.dataclass(frozen=True)
class Group:
    """Runs that train together: the initializers of one cell and seed."""

    cell: Cell
    seed: int
    initializers: tuple[str, ...]

    def runs(self) -> list[RunKey]:
        return [(spec, self.seed, self.cell) for spec in self.initializers]


def plan(config: ExperimentConfig, done: Collection[RunKey] = ()) -> list[Group]:
    """The groups of a comparison, in order (cell, then seed), without the runs in `done`;
    with `config.group_arms` off, every group holds one initializer."""
    groups = []
    for cell in config.cells():
        for seed in config.seeds:
            todo = tuple(spec for spec in config.initializers if (spec, seed, cell) not in done)
            if config.group_arms and todo:
                groups.append(Group(cell, seed, todo))
            else:
                groups += [Group(cell, seed, (spec,)) for spec in todo]
    return groups


def all_runs(config: ExperimentConfig) -> list[RunKey]:
    """Every run of the comparison, in plan order: (initializer, seed, cell)."""
    grouped = plan(dataclasses.replace(config, group_arms=True))
    return [key for group in grouped for key in group.runs()]
