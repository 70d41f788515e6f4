"""Files and folders written whole: a crash or a full disk leaves the old one or the new one, never half of one.
Imports nothing of the project."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_text_whole(path: Path, text: str, mode: int | None = None) -> None:
    """``path`` holds ``text``: written beside it, then renamed over it. A failed write leaves nothing beside it.
    ``mode``: the file's permissions from its creation on (0o600: its owner's alone, never readable by others)."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        if mode is None:
            tmp.write_text(text)
        else:
            tmp.unlink(missing_ok=True)
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:
                f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def folder_written_whole(folder: Path) -> Iterator[Path]:
    """A temporary sibling of ``folder`` to write into; it becomes ``folder`` when the block ends, and goes if the
    block raises."""
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
