"""Files under `--logdir`, through TensorFlow's file system layer (`tf.io.gfile`).

TensorBoard's event files already go through it, so everything else the harness
writes does too: `--logdir` may be a local folder, a shared mount, or a URI that
TensorFlow's file systems support (`gs://bucket/logs`; `ram://` in the tests).
Paths are strings joined with `join` (`os.path.join` keeps a URI's scheme).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import tensorflow as tf


def join(*parts: str | os.PathLike) -> str:
    return os.path.join(*map(os.fspath, parts))


def is_uri(path: str | os.PathLike) -> bool:
    """Whether `path` names a file system by a scheme (`gs://...`) rather than a local path."""
    return "://" in os.fspath(path)


def exists(path: str) -> bool:
    return tf.io.gfile.exists(path)


def makedirs(path: str) -> None:
    tf.io.gfile.makedirs(path)


def read_text(path: str) -> str:
    with tf.io.gfile.GFile(path, "r") as file:
        return file.read()


def read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as file:
        return file.read()


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file renamed over it, so a reader (or
    an interrupted run) never sees a half-written file where the file system renames
    atomically (local and shared POSIX folders)."""
    head, name = os.path.split(path)
    temporary = join(head, f".{name}.{uuid.uuid4().hex}")
    try:
        with tf.io.gfile.GFile(temporary, "w") as file:
            file.write(text)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
        raise


@contextmanager
def open_binary(path: str) -> Iterator[IO[bytes]]:
    """`path` opened for writing bytes (a figure)."""
    with tf.io.gfile.GFile(path, "wb") as file:
        yield file


def remove(path: str) -> None:
    """Deletes the file `path` if it exists."""
    if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


def remove_tree(path: str) -> None:
    """Deletes the folder `path` and everything in it, if it exists."""
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def glob(pattern: str) -> list[str]:
    return tf.io.gfile.glob(pattern)
