"""The harness's command lines in the test's own process, as the tests call them."""

from collections.abc import Callable

from absl import flags

# Both command lines in one process: their shared flags are defined once (flagdefs).
from experiments import compare, diagnose


def _run(main: Callable[[list[str]], None], program: str, argv: tuple[str, ...]) -> None:
    """`python -m experiments.<program> ARGV...` in this process, flags reset before and
    after."""
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS([program, *argv])
        main([program])
    finally:
        flags.FLAGS.unparse_flags()


def run_compare(*argv: str) -> None:
    _run(compare.main, "compare", argv)


def run_diagnose(*argv: str) -> None:
    _run(diagnose.main, "diagnose", argv)
