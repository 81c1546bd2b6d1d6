"""Atomic outputs: nothing half-written survives, existing outputs are protected."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from grunet.atomic import atomic_output, stale_temporaries
from grunet.errors import InputError


def test_failed_write_leaves_neither_output_nor_temporary(tmp_path):
    target = tmp_path / "table.csv"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(InputError, match="already exists"), atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "old"
    with atomic_output(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_directory_outputs_are_renamed_into_place(tmp_path):
    target = tmp_path / "store.zarr"
    with atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "chunk").write_text("x")
    assert (target / "chunk").read_text() == "x"
    assert stale_temporaries(tmp_path) == []


def test_temporaries_of_killed_runs_are_cleaned_by_the_next_write(tmp_path):
    target = tmp_path / "out.csv"
    code = (
        "import os, sys\n"
        "from grunet.atomic import atomic_output\n"
        f"with atomic_output({str(target)!r}) as tmp:\n"
        "    tmp.write_text('partial')\n"
        "    os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert not target.exists()
    assert len(stale_temporaries(tmp_path)) == 1
    with atomic_output(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert stale_temporaries(tmp_path) == []


def test_concurrent_writers_never_share_a_temporary_path(tmp_path):
    from grunet.atomic import temporary_sibling

    names = {temporary_sibling(tmp_path / "A01.ome.zarr") for _ in range(100)}
    assert len(names) == 100
    assert all(str(n.name).startswith(".A01.ome.zarr.tmp-") for n in names)
