"""Atomic outputs: build at a temporary sibling path, then rename into place.

An interrupted run leaves at most a ``.<name>.tmp-<pid>-<rand>`` sibling, never a half-written
output that a rerun would trust. Temporary names carry the pid and a random suffix, so concurrent
jobs never share them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from grunet.errors import InputError

TMP_MARK = ".tmp-"


def temporary_sibling(path: str | Path) -> Path:
    """A unique, hidden temporary path in the same directory as ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def remove_path(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_output_free(path: str | Path, overwrite: bool) -> None:
    """Refuse to replace an existing output unless ``overwrite`` is set."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "output already exists; pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_output(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; rename it into place on success.

    Args:
        path: the final file or directory.
        overwrite: replace an existing ``path`` (else an existing one is an error).

    Yields:
        The temporary path (not yet created); write a file or directory there.

    Example:
        >>> with atomic_output("out.csv", overwrite=True) as tmp:  # doctest: +SKIP
        ...     df.to_csv(tmp)
    """
    path = Path(path)
    check_output_free(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{path}: nothing was written")
        if path.exists():
            old = temporary_sibling(path)
            os.replace(path, old)
            os.replace(tmp, path)
            remove_path(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        remove_path(tmp)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_temporaries(path: str | Path) -> list[Path]:
    """Delete temporary siblings of ``path`` left by runs that died (their pid is gone).

    Temporaries of live processes (a concurrent job) are left alone.
    """
    path = Path(path)
    prefix = f".{path.name}{TMP_MARK}"
    removed = []
    if not path.parent.is_dir():
        return removed
    for candidate in path.parent.iterdir():
        if not candidate.name.startswith(prefix):
            continue
        pid_text = candidate.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            remove_path(candidate)
            removed.append(candidate)
    return removed


def stale_temporaries(directory: str | Path) -> list[Path]:
    """Temporary siblings left by interrupted runs in ``directory`` (safe to delete)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith(".") and TMP_MARK in p.name)
