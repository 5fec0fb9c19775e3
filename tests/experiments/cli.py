"""`python -m experiments.compare` in the test's own process, as the tests call it."""

from absl import flags

from experiments import compare


def run_compare(*argv: str) -> None:
    """`python -m experiments.compare ARGV...` in this process, flags reset before and after."""
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["compare", *argv])
        compare.main(["compare"])
    finally:
        flags.FLAGS.unparse_flags()
