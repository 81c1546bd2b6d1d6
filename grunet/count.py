"""Cell counts per sample and time point, from per-cell tables or earlier count CSVs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from grunet.atomic import atomic_output, check_output_free
from grunet.errors import InputError

COUNT_COLUMNS = ["sample", "t", "n_cells"]


def counts_from_table(
    table: pd.DataFrame,
    *,
    n_timepoints: int | None = None,
    sample: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Cells per (sample, t): the number of distinct labels (a 3D cell in many z planes is one).

    Args:
        table: per-cell table (columns ``sample, t, label`` at least), as written by measure.
        n_timepoints: time points of the stack; those without cells get ``n_cells = 0``.
        sample: the sample name when the table may be empty (else taken from the table).
        metadata: sample-sheet columns to carry (default: the table's columns after the
            measurement columns, which are constant per sample).

    Returns:
        DataFrame ``sample, t, n_cells`` + metadata columns, one row per (sample, t).

    Example:
        >>> counts = counts_from_table(pd.read_parquet("cells/A01.parquet"))  # doctest: +SKIP
    """
    from grunet.measure import table_columns
    from grunet.measure3d import table_columns_3d

    missing = {"sample", "t", "label"} - set(table.columns)
    if missing:
        raise ValueError(f"per-cell table lacks columns {sorted(missing)}")
    grouped = table.groupby(["sample", "t"], sort=True)["label"].nunique()
    counts = grouped.rename("n_cells").reset_index()
    samples = list(dict.fromkeys(table["sample"].tolist())) or ([sample] if sample else [])
    if n_timepoints is not None:
        full = pd.MultiIndex.from_product([samples, range(n_timepoints)], names=["sample", "t"])
        counts = counts.set_index(["sample", "t"]).reindex(full, fill_value=0).reset_index()
    counts["t"] = counts["t"].astype("int64")
    counts["n_cells"] = counts["n_cells"].astype("int64")
    if metadata is None:
        known = set(table_columns([])) | set(table_columns_3d([]))
        known |= {c for c in table.columns if "_intensity_" in c}
        extra = [c for c in table.columns if c not in known]
        metadata = {}
        if len(table):
            first = table.drop_duplicates("sample").set_index("sample")[extra]
            for column in extra:
                counts[column] = counts["sample"].map(first[column])
    for key, value in metadata.items():
        counts[key] = value
    return counts


def read_counts_input(path: str | Path) -> pd.DataFrame:
    """Counts of one input: a per-cell Parquet/CSV table, or a counts CSV (passed through)."""
    from grunet.measure import read_provenance

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "not found")
    if path.suffix == ".parquet":
        try:
            table = pd.read_parquet(path)
            provenance = read_provenance(path)
        except Exception as err:  # pyarrow raises several types for a corrupt file
            raise InputError(path, f"not a readable Parquet table ({err})") from err
        shape = provenance.get("shape", {})
        try:
            return counts_from_table(
                table,
                n_timepoints=shape.get("t"),
                sample=provenance.get("sample"),
                metadata=provenance.get("metadata") if len(table) == 0 else None,
            )
        except ValueError as err:
            raise InputError(path, str(err)) from err
    if path.suffix == ".csv":
        try:
            frame = pd.read_csv(path)
        except Exception as err:
            raise InputError(path, f"not a readable CSV ({err})") from err
        if "label" in frame.columns:
            return counts_from_table(frame)
        missing = set(COUNT_COLUMNS) - set(frame.columns)
        if missing:
            raise InputError(path, f"neither a cell table nor counts: lacks {sorted(missing)}")
        return frame
    raise InputError(path, "expected a .parquet cell table or a .csv (cell table or counts)")


def count_files(
    inputs: Sequence[str | Path], out_csv: str | Path, *, overwrite: bool = False
) -> Path:
    """Count cells of per-cell tables and/or concatenate count CSVs into one counts CSV.

    Args:
        inputs: ``cells/<sample>.parquet`` tables and/or ``counts/<sample>.csv`` files.
        out_csv: the counts CSV to write (atomically), with a ``.json`` provenance sidecar.
        overwrite: replace an existing output.

    Returns:
        The CSV path. Rows are sorted by sample and t; a (sample, t) given twice is an error.

    Example:
        >>> count_files(["cells/A01.parquet"], "counts/A01.csv")  # doctest: +SKIP
    """
    from grunet import __version__

    out_csv = Path(out_csv)
    sidecar = out_csv.with_name(out_csv.name + ".json")
    check_output_free(out_csv, overwrite)
    if not inputs:
        raise InputError(None, "no input tables or count files given")
    frames = [read_counts_input(p) for p in inputs]
    counts = pd.concat(frames, ignore_index=True, sort=False)
    duplicated = counts.duplicated(["sample", "t"], keep=False)
    if duplicated.any():
        first = counts[duplicated].iloc[0]
        raise InputError(
            out_csv,
            f"sample {first['sample']!r} t={first['t']} is counted twice (inputs overlap)",
        )
    counts = counts.sort_values(["sample", "t"], kind="stable").reset_index(drop=True)
    columns = COUNT_COLUMNS + [c for c in counts.columns if c not in COUNT_COLUMNS]
    counts = counts[columns]
    with atomic_output(out_csv, overwrite=overwrite) as tmp:
        counts.to_csv(tmp, index=False)
    provenance = {"version": __version__, "stage": "count", "inputs": [str(p) for p in inputs]}
    with atomic_output(sidecar, overwrite=True) as tmp:
        tmp.write_text(json.dumps(provenance, indent=1) + "\n")
    return out_csv
