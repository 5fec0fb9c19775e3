"""The lowest versions make test-lowest installs are the lower bounds pyproject.toml declares.

`make test-lowest` proves the bounds only while tests/install/lowest.txt pins exactly
them: a bound raised or lowered in one file and not the other fails here.
"""

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]


def declared() -> dict[str, Version]:
    """The lower bound (>= or ==) of each core and test requirement in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {}
    for line in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(line)
        for specifier in requirement.specifier:
            if specifier.operator in (">=", "=="):
                bounds[canonicalize_name(requirement.name)] = Version(specifier.version)
    return bounds


def pinned() -> dict[str, Version]:
    """The `name==version` lines of tests/install/lowest.txt."""
    pins = {}
    for line in (ROOT / "tests/install/lowest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"not a pin: {line!r}"
            pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    return pins


def test_every_pin_is_the_declared_lower_bound():
    bounds = declared()
    differ = {
        name: f"pinned {version}, declared {bounds.get(name, 'no lower bound')}"
        for name, version in pinned().items()
        if bounds.get(name) != version
    }
    assert not differ, differ


def test_every_core_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {canonicalize_name(Requirement(line).name) for line in project["dependencies"]}
    missing = core - set(pinned())
    assert not missing, f"core dependencies not tested at their lowest version: {missing}"
