"""TensorFlow's start without the lines its C++ runtime prints that nobody asked for.

Importing TensorFlow and finding its devices prints a dozen lines straight to file
descriptor 2, below Python's `sys.stderr`: the CPU instructions it was not built
for, oneDNN's notice, "Could not find cuda drivers" and "failed call to cuInit" on a
machine without a GPU, XLA's service. `TF_CPP_MIN_LOG_LEVEL` does not reach the ones
written before absl's logging starts, and level 3 would hide real errors too. So
`start_tensorflow` sets level 1 (information off, warnings and errors on) and, while
TensorFlow imports and lists its devices, sends descriptor 2 through a filter that
passes on every line but the known start-up notices. The CUDA lines count as notices only
where this machine has no NVIDIA driver: on a GPU machine they say why the GPU is
not used, so they stay. A user who set `TF_CPP_MIN_LOG_LEVEL` gets TensorFlow's
own behaviour, untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# Notices of TensorFlow's start, on any machine.
_NOTICES = (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"cpu_feature_guard\.cc.*This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"oneDNN custom operations are on",
    r"XLA service 0x[0-9a-f]+ initialized for platform",
    r"StreamExecutor device \(\d+\): Host",
)
# Notices of a machine without a GPU; on a machine with one they explain a failure.
_NO_GPU_NOTICES = (
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"TF-TRT Warning: Could not find TensorRT",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
)


def has_nvidia_driver() -> bool:
    """Whether an NVIDIA kernel driver is loaded (the files CUDA's own tools read)."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def start_tensorflow() -> None:
    """Imports TensorFlow and lists its devices, keeping only the lines worth reading.

    Idempotent: once TensorFlow is imported, later calls do nothing.
    """
    if "tensorflow" in sys.modules:
        return
    if LOG_LEVEL in os.environ:  # the user chose what TensorFlow prints
        _import()
        return
    os.environ[LOG_LEVEL] = "1"
    patterns = _NOTICES + (() if has_nvidia_driver() else _NO_GPU_NOTICES)
    noise = re.compile("|".join(f"(?:{pattern})" for pattern in patterns))
    with _filtered_stderr(noise):
        _import()


def _import() -> None:
    import tensorflow as tf

    tf.config.list_physical_devices()  # where CUDA is tried, and cuInit's failure logged


# The filter runs in a process of its own, so that what TensorFlow writes just before it
# aborts (an unsupported CPU, a broken install) still reaches the terminal.
_FILTER = """
import re, sys
noise = re.compile(sys.argv[1])
for line in sys.stdin.buffer:
    if not noise.search(line.decode("utf-8", "replace")):
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
"""


@contextlib.contextmanager
def _filtered_stderr(noise: re.Pattern) -> Iterator[None]:
    """Sends file descriptor 2 (C++ and Python alike) through a filter process inside the
    block, which writes every line that `noise` does not match to the real stderr, as
    it comes. Where descriptor 2 is closed, the block runs unfiltered."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon, `2>&-`): nothing to keep quiet
        yield
        return
    if sys.stderr is not None:
        sys.stderr.flush()
    # -I -S: the standard library alone, started in milliseconds.
    command = [sys.executable, "-I", "-S", "-c", _FILTER, noise.pattern]
    with subprocess.Popen(command, stdin=subprocess.PIPE) as filter_:
        os.dup2(filter_.stdin.fileno(), 2)
        try:
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            filter_.stdin.close()  # the filter drains what is left and ends
            filter_.wait()
