"""A quiet start: TensorFlow's C++ start-up notices are dropped, real lines are kept."""

import os
import subprocess
import sys

import pytest

from experiments import quiet

START = "from experiments import quiet; quiet.start_tensorflow(); print('ready', file=sys.stderr)"


def _start(**env: str) -> str:
    # As from a shell: importing TensorFlow in this process set TF_CPP_MIN_LOG_LEVEL here.
    clean = {key: value for key, value in os.environ.items() if key != quiet.LOG_LEVEL}
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; {START}"],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **env},
    )
    return done.stderr


def test_tensorflow_starts_without_a_line():
    assert _start() == "ready\n"


def test_a_log_level_the_user_set_is_left_alone():
    stderr = _start(**{quiet.LOG_LEVEL: "0"})
    notices = [line for line in stderr.splitlines() if line != "ready"]
    if not notices:
        pytest.skip("TensorFlow prints nothing at its start on this machine")
    # The lines the quiet start drops are there when the user asked for them.
    assert any("absl::InitializeLog" in line or "cuda" in line for line in notices)


def test_captured_lines_that_are_not_notices_are_written_back(capfd):
    noise = quiet.re.compile("oneDNN custom operations are on")
    with pytest.raises(RuntimeError), quiet._filtered_stderr(noise):
        os.write(2, b"I0000 oneDNN custom operations are on. You may see...\n")
        os.write(2, b"W0000 a real warning\n")
        print("a Python warning", file=sys.stderr)
        raise RuntimeError("the import failed")
    # pytest captures Python's sys.stderr apart from descriptor 2, so the order may differ.
    kept = capfd.readouterr().err.splitlines()
    assert sorted(kept) == ["W0000 a real warning", "a Python warning"]


def test_what_is_written_before_an_abort_still_arrives():
    """TensorFlow aborts on a CPU it cannot run on, right after saying why: the filter
    lives in its own process, so the reason reaches the terminal."""
    script = (
        "import os, re\n"
        "from experiments import quiet\n"
        "with quiet._filtered_stderr(re.compile('notice')):\n"
        "    os.write(2, b'a notice\\nF0000 the CPU lacks AVX\\n')\n"
        "    os.abort()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.splitlines() == ["F0000 the CPU lacks AVX"]


def test_a_closed_stderr_starts_tensorflow_unfiltered():
    """A daemon or `2>&-` has no descriptor 2 and no sys.stderr: nothing to filter."""
    script = (
        "import os, sys\nos.close(2)\nsys.stderr = None\n"
        "from experiments import quiet\nquiet.start_tensorflow()\nprint('ready')\n"
    )
    clean = {key: value for key, value in os.environ.items() if key != quiet.LOG_LEVEL}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=clean
    )
    assert (done.returncode, done.stdout) == (0, "ready\n")
