"""TensorFlow's start without the lines its C++ runtime prints that nobody asked for.

Importing TensorFlow and finding its devices prints a dozen lines straight to file
descriptor 2, below Python's `sys.stderr`: the CPU instructions it was not built
for, oneDNN's notice, "Could not find cuda drivers" and "failed call to cuInit" on a
machine without a GPU, XLA's service. `TF_CPP_MIN_LOG_LEVEL` does not reach the ones
written before absl's logging starts, and level 3 would hide real errors too. So
`start_tensorflow` sets level 1 (information off, warnings and errors on), captures
descriptor 2 while TensorFlow imports and lists its devices, and writes back every
captured line but the known start-up notices. The CUDA lines count as notices only
where this machine has no NVIDIA driver: on a GPU machine they say why the GPU is
not used, so they stay. A user who set `TF_CPP_MIN_LOG_LEVEL` gets TensorFlow's
own behaviour, untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
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


@contextlib.contextmanager
def _filtered_stderr(noise: re.Pattern) -> Iterator[None]:
    """Captures file descriptor 2 (C++ and Python alike) inside the block, then writes
    back every line that `noise` does not match, also when the block raised."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            sys.stderr.writelines(
                line for line in text.splitlines(keepends=True) if not noise.search(line)
            )
            sys.stderr.flush()
