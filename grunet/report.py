"""QC report: one self-contained HTML page for a whole experiment.

The page holds, for every sample, label outlines over the image at a few time points, cell counts
over time (per sample and per group, e.g. condition), cell-size distributions, the training curves
and validation metrics when a model was trained, and the provenance of every output (versions,
configuration, model sha256). Figures are PNGs embedded as base64, so the file can be mailed or
archived alone.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import platform
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import pandas as pd

from grunet import __version__
from grunet.atomic import atomic_output
from grunet.errors import GrunetError, InputError

OVERLAY_MAX_SIZE = 512  # overlays are subsampled to at most this many pixels per side
OVERLAY_MIN_WIDTH = 256  # smaller overlays are shown enlarged (nearest neighbour) to this width
PACKAGES = (
    "grunet",
    "torch",
    "numpy",
    "zarr",
    "ome-zarr",
    "dask",
    "dask-image",
    "scikit-image",
    "pandas",
    "pyarrow",
    "tifffile",
    "snakemake",
)
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.4em; text-align: center; }
figcaption { font-size: 0.85em; color: #555; } img { max-width: 100%; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.warn { color: #a40; font-weight: bold; } .muted { color: #777; }
"""


def build_report(
    output: str | Path,
    *,
    counts: str | Path,
    tables: Sequence[str | Path],
    images: Sequence[str | Path],
    probs: Sequence[str | Path] = (),
    model: str | Path | None = None,
    train_dir: str | Path | None = None,
    config_files: Sequence[str | Path] = (),
    group_by: str | None = "condition",
    frames: int = 3,
    max_overlay_samples: int = 48,
    title: str = "grunet report",
    overwrite: bool = False,
) -> Path:
    """Write the experiment's QC report as one self-contained HTML file.

    Args:
        output: the HTML file to write (atomically).
        counts: experiment counts CSV (``sample, t, n_cells`` + metadata columns).
        tables: per-cell Parquet tables, one per sample (``cells/<sample>.parquet``).
        images: canonical image stores ``<sample>.ome.zarr`` with ``labels/cells``.
        probs: probability stores of the samples (their attrs give the model sha256 used).
        model: the checkpoint used for prediction (its sha256 is shown).
        train_dir: output folder of ``grunet train`` (curves, log.csv, val_metrics.json), if any.
        config_files: configuration files (YAML, sample sheet) shown verbatim for provenance.
        group_by: metadata column grouping the count plot (skipped if absent or empty).
        frames: overlays per sample (time points spread evenly over the series).
        max_overlay_samples: overlays of at most this many samples (keeps the page small).
        title: page title.
        overwrite: replace an existing ``output``.

    Returns:
        The path of the written report.

    Example:
        >>> build_report("report.html", counts="counts.csv", tables=["cells/a.parquet"],
        ...              images=["a.ome.zarr"])  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")

    for path in [counts, *tables, *images, *probs, *config_files]:
        _require(path)
    if model is not None:
        _require(model)
    if train_dir is not None and not Path(train_dir).is_dir():
        raise InputError(train_dir, "training folder does not exist")
    if frames < 1:
        raise InputError(None, f"--frames must be >= 1, got {frames}")

    count_table = pd.read_csv(counts)
    for column in ("sample", "t", "n_cells"):
        if column not in count_table.columns:
            raise InputError(counts, f"counts table has no '{column}' column")
    cells = _read_tables(tables, group_by)
    stores = {_sample_name(p): Path(p) for p in images}
    if group_by and (group_by not in count_table.columns or count_table[group_by].isna().all()):
        group_by = None

    sections = [
        _section_summary(count_table, cells, stores, group_by),
        _section_counts(count_table, group_by),
        _section_overlays(stores, count_table, frames, max_overlay_samples),
        _section_sizes(cells, group_by),
        _section_training(train_dir) if train_dir is not None else "",
        _section_provenance(stores, probs, tables, model, config_files),
    ]
    return write_page(output, title, sections, overwrite=overwrite)


def write_page(output, title: str, sections: list[str], *, overwrite: bool) -> Path:
    """The report's HTML page around ``sections``, written atomically to ``output``."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{_esc(title)}</h1><p class='muted'>grunet {__version__}, {now}</p>"
        + "".join(sections)
        + "</body></html>\n"
    )
    with atomic_output(output, overwrite=overwrite) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return Path(output)


# ----------------------------------------------------------------------------------- inputs


def _require(path: str | Path) -> None:
    if not Path(path).exists():
        raise InputError(path, "does not exist")


def _sample_name(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".ome.zarr", ".probs.zarr", ".zarr", ".parquet"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _read_tables(tables: Sequence[str | Path], group_by: str | None) -> pd.DataFrame:
    """The columns the report plots, from every table (the rest is never loaded)."""
    import pyarrow.parquet as pq

    wanted = {"sample", "t", "area", "area_um2", "volume", "volume_um3", group_by}
    frames = []
    for path in tables:
        try:
            columns = [c for c in pq.read_schema(path).names if c in wanted]
            frame = pd.read_parquet(path, columns=columns)
        except Exception as err:  # pyarrow raises several types for unreadable files
            raise InputError(path, f"not a readable Parquet table ({err})") from None
        if "sample" not in frame.columns:
            frame["sample"] = _sample_name(path)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["sample"])


def _open_group(path: Path):
    import zarr

    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a missing or broken store
        raise InputError(path, f"not a readable zarr store ({err})") from None


def _grunet_attrs(path: Path) -> dict:
    attrs = dict(_open_group(path).attrs)
    return dict(attrs.get("grunet", {}))


def _parquet_provenance(path: str | Path) -> dict:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    out = {}
    for key, value in meta.items():
        key = key.decode(errors="replace")
        if key in ("pandas", "ARROW:schema"):
            continue
        text = value.decode(errors="replace")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


# ---------------------------------------------------------------------------------- figures


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return _img_tag(buf.getvalue())


def _legend(ax, max_entries: int = 20) -> None:
    """A legend, unless there are too many lines to tell apart."""
    if 0 < len(ax.get_legend_handles_labels()[1]) <= max_entries:
        ax.legend(fontsize="small", loc="best")


def _figure(img: str, caption: str) -> str:
    return f"<figure>{img}<figcaption>{_esc(caption)}</figcaption></figure>"


def _img_tag(png: bytes, alt: str = "", width: int | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    size = f" width='{width}' style='image-rendering: pixelated'" if width else ""
    return f"<img alt='{_esc(alt)}'{size} src='data:image/png;base64,{data}'>"


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for value in record:
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool
            ):
                text = f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
                cells.append(f"<td class='num'>{_esc(text)}</td>")
            else:
                cells.append(f"<td>{_esc(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


# --------------------------------------------------------------------------------- sections


def _section_summary(counts: pd.DataFrame, cells: pd.DataFrame, stores: dict, group_by) -> str:
    meta_columns = [c for c in counts.columns if c not in ("sample", "t", "n_cells")]
    rows = []
    for sample, group in counts.groupby("sample", sort=False):
        row = {"sample": sample}
        for column in meta_columns:
            values = group[column].dropna().unique()
            row[column] = ", ".join(str(v) for v in values)
        if sample in stores:
            attrs = _grunet_attrs(stores[sample])
            shape = _open_group(stores[sample])["0"].shape
            row["shape (TCZYX)"] = " × ".join(str(s) for s in shape)
            sizes = attrs.get("pixel_sizes") or {}
            row["pixel size ZYX (µm)"] = " × ".join(
                "?" if sizes.get(a) is None else f"{sizes[a]:.4g}" for a in "zyx"
            )
            row["frame interval (s)"] = "?" if sizes.get("t") is None else f"{sizes['t']:.4g}"
            row["channels"] = ", ".join(attrs.get("channel_names") or [])
            row["source"] = attrs.get("source", "")
            scene = attrs.get("scene")
            if scene:
                row["source"] += f" (scene {scene['index']}: {scene['name']})"
            for warning in attrs.get("metadata_warnings") or []:
                row["source"] += (
                    f"; warning: {warning.removeprefix(attrs.get('source', '') + ': ')}"
                )
        row["frames"] = int(group["t"].nunique())
        row["cells (all frames)"] = int(group["n_cells"].sum())
        row["cells per frame (mean)"] = float(group["n_cells"].mean())
        rows.append(row)
    total = int(counts["n_cells"].sum())
    return (
        f"<h2>Samples</h2><p>{len(rows)} samples; cell counts summed over all time points: "
        f"{total}; {len(cells)} rows (cell × plane) in the per-cell tables.</p>"
        + _table(pd.DataFrame(rows))
    )


def _section_counts(counts: pd.DataFrame, group_by) -> str:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    for sample, group in counts.groupby("sample", sort=False):
        group = group.sort_values("t")
        marker = "o" if len(group) < 20 else None
        ax.plot(group["t"], group["n_cells"], marker=marker, label=str(sample))
    ax.set_xlabel("time point t")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("cells")
    _legend(ax)
    parts = ["<h2>Cell counts</h2>", _figure(_png(fig), "Cells per time point, per sample")]
    if group_by:
        fig, ax = plt.subplots(figsize=(7, 4))
        per_t = counts.groupby([group_by, "t"])["n_cells"].agg(["mean", "min", "max", "count"])
        for name, group in per_t.groupby(level=0, sort=False):
            t = group.index.get_level_values("t")
            n = int(group["count"].max())
            ax.plot(t, group["mean"], marker="o" if len(t) < 20 else None, label=f"{name} (n={n})")
            ax.fill_between(t, group["min"], group["max"], alpha=0.2)
        ax.set_xlabel("time point t")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("cells (mean; band: min-max over samples)")
        _legend(ax)
        parts.append(_figure(_png(fig), f"Cells per time point, per {group_by}"))
    return "".join(parts)


def _overlay(image: np.ndarray, labels: np.ndarray, value_range) -> bytes:
    """Grey image with each cell's outline in its own colour, as PNG bytes."""
    import matplotlib.image
    from skimage.segmentation import find_boundaries

    image = image.astype(np.float32)
    if (
        value_range is None
        or not np.isfinite(value_range).all()
        or value_range[1] <= value_range[0]
    ):
        value_range = np.percentile(image, (1.0, 99.8))
    lo, hi = float(value_range[0]), float(value_range[1])
    grey = np.clip((image - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rng = np.random.default_rng(0)
    palette = rng.uniform(0.3, 1.0, size=(4096, 3)).astype(np.float32)
    colours = palette[labels.astype(np.int64) % len(palette)]
    inside = labels > 0
    rgb[inside] = 0.8 * rgb[inside] + 0.2 * colours[inside]
    edges = find_boundaries(labels, mode="inner")
    rgb[edges] = colours[edges]
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, rgb, format="png")
    return buf.getvalue()


def _section_overlays(stores: dict, counts: pd.DataFrame, frames: int, max_samples: int) -> str:
    parts = [
        "<h2>Segmentation overlays</h2><p class='muted'>Cell outlines (one colour per cell) over "
        "the channel the model read (the first of them), middle z plane; images larger than "
        f"{OVERLAY_MAX_SIZE} px are subsampled.</p>"
    ]
    if len(stores) > max_samples:
        hidden = list(stores)[max_samples:]
        parts.append(
            f"<p class='muted'>Overlays of the first {max_samples} samples; not shown: "
            f"{_esc(', '.join(hidden))}.</p>"
        )
    for sample, store in list(stores.items())[:max_samples]:
        group = _open_group(store)
        if "labels" not in group or "cells" not in group["labels"]:
            parts.append(
                f"<h3>{_esc(sample)}</h3><p class='warn'>{_esc(store)}: no labels/cells</p>"
            )
            continue
        image, labels = group["0"], group["labels"]["cells"]["0"]
        attrs = dict(group.attrs.get("grunet", {}))
        channel, channel_name = _channel_read(attrs, group["labels"]["cells"])
        n_t, _, n_z, n_y, n_x = image.shape
        step = max(1, math.ceil(max(n_y, n_x) / OVERLAY_MAX_SIZE))
        z = n_z // 2
        shown = math.ceil(n_x / step)
        width = OVERLAY_MIN_WIDTH if shown < OVERLAY_MIN_WIDTH else None  # enlarge small crops
        ranges = (attrs.get("normalization") or {}).get("ranges") or []
        value_range = ranges[channel] if channel < len(ranges) else None
        times = sorted({round(i * (n_t - 1) / max(frames - 1, 1)) for i in range(min(frames, n_t))})
        parts.append(f"<h3>{_esc(sample)}</h3>")
        for t in times:
            plane = np.asarray(image[t, channel, z, ::step, ::step])
            mask = np.asarray(labels[t, 0, z, ::step, ::step])
            rng = np.asarray(value_range, dtype=np.float64) if value_range is not None else None
            row = counts[(counts["sample"] == sample) & (counts["t"] == t)]
            n = (
                int(row["n_cells"].sum())
                if len(row)
                else int(len(np.unique(mask)) - (mask == 0).any())
            )
            caption = f"t={t}" + (f", z={z}" if n_z > 1 else "") + channel_name + f": {n} cells"
            parts.append(
                f"<figure>{_img_tag(_overlay(plane, mask, rng), caption, width)}"
                f"<figcaption>{_esc(caption)}</figcaption></figure>"
            )
    return "".join(parts)


def _channel_read(image_attrs: dict, label_image) -> tuple[int, str]:
    """(index, caption part) of the image channel the model read first, from the labels'
    provenance; channel 0 where it is not recorded (labels of an older grunet)."""
    names = image_attrs.get("channel_names") or []
    read = (dict(label_image.attrs).get("grunet") or {}).get("channel_names") or []
    if not read or read[0] not in names:
        return 0, ""
    return names.index(read[0]), (f", {read[0]}" if len(names) > 1 else "")


def _section_sizes(cells: pd.DataFrame, group_by) -> str:
    import matplotlib.pyplot as plt

    column, unit = "area", "px"
    if "area_um2" in cells.columns and cells["area_um2"].notna().any():
        column, unit = "area_um2", "µm²"
    elif "area" not in cells.columns and "volume" in cells.columns:  # 3D cells
        column, unit = "volume", "voxels"
        if "volume_um3" in cells.columns and cells["volume_um3"].notna().any():
            column, unit = "volume_um3", "µm³"
    if column not in cells.columns or cells.empty:
        return "<h2>Cell sizes</h2><p class='muted'>No cells measured.</p>"
    values = cells[column].dropna()
    bins = np.histogram_bin_edges(values, bins=min(60, max(10, int(np.sqrt(len(values))))))
    keys = ["sample"] + ([group_by] if group_by and group_by in cells.columns else [])
    parts = ["<h2>Cell sizes</h2>"]
    for key in keys:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, group in cells.groupby(key, sort=False):
            ax.hist(
                group[column].dropna(), bins=bins, histtype="step", density=True, label=str(name)
            )
        ax.set_xlabel(f"{column} ({unit})")
        ax.set_ylabel("density")
        _legend(ax)
        parts.append(_figure(_png(fig), f"Cell size distribution per {key}"))
    stats = cells.groupby("sample", sort=False)[column].describe()[["count", "mean", "50%", "std"]]
    stats = stats.rename(columns={"50%": "median"}).reset_index()
    return "".join(parts) + _table(stats)


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _section_training(train_dir: str | Path) -> str:
    import matplotlib.pyplot as plt

    train_dir = Path(train_dir)
    parts = [f"<h2>Training</h2><p class='muted'>{_esc(train_dir)}</p>"]
    curves, log = train_dir / "curves.png", train_dir / "log.csv"
    if curves.is_file():
        parts.append(_figure(_img_tag(curves.read_bytes(), "training curves"), str(curves.name)))
    elif log.is_file():
        history = pd.read_csv(log)
        numeric = history.select_dtypes("number")
        if numeric.shape[1] > 1:
            fig, ax = plt.subplots(figsize=(7, 4))
            x = numeric.columns[0]
            for column in numeric.columns[1:]:
                ax.plot(numeric[x], numeric[column], label=column)
            ax.set_xlabel(x)
            ax.legend(fontsize="small")
            parts.append(_figure(_png(fig), f"Training log ({log.name})"))
    metrics = train_dir / "val_metrics.json"
    if metrics.is_file():
        flat = _flatten(json.loads(metrics.read_text()))
        frame = pd.DataFrame({"metric": list(flat), "value": list(flat.values())})
        parts += ["<h3>Validation metrics</h3>", _table(frame)]
    else:
        parts.append("<p class='warn'>No val_metrics.json in the training folder.</p>")
    return "".join(parts)


def _versions() -> pd.DataFrame:
    rows = [{"package": "python", "version": platform.python_version()}]
    for name in PACKAGES:
        try:
            rows.append({"package": name, "version": importlib_metadata.version(name)})
        except importlib_metadata.PackageNotFoundError:
            continue
    rows.append({"package": "platform", "version": platform.platform()})
    return pd.DataFrame(rows)


def _checkpoint_summary(model: str | Path) -> str:
    """The checkpoint's training metadata: data, epochs, validation figures, full config."""
    from grunet.checkpoint import load_checkpoint

    try:
        meta = dict(load_checkpoint(model).metadata)
    except Exception as err:  # torch.load raises many types on a damaged file; report, go on
        text = str(err) if isinstance(err, GrunetError) else f"{type(err).__name__}: {err}"
        return f"<p class='warn'>{_esc(model)}: not a readable grunet checkpoint ({_esc(text)})</p>"
    config = meta.pop("config", None)
    flat = _flatten(meta)
    if not flat:
        return "<p class='muted'>The checkpoint records no training metadata.</p>"
    frame = pd.DataFrame({"training metadata": list(flat), "value": list(flat.values())})
    details = ""
    if config is not None:
        text = json.dumps(config, indent=2, default=str)
        details = f"<details><summary>training config</summary><pre>{_esc(text)}</pre></details>"
    return _table(frame) + details


def _diameter(scale) -> str:
    """'31.2 px (estimated, ×0.61)': the object scale an output was made at (and the
    low-magnification network, where that predicted)."""
    if not isinstance(scale, dict) or "diameter" not in scale:
        return ""
    text = f"{scale['diameter']:.1f} px ({scale.get('source', '')}, ×{scale.get('factor', 1):.2f}"
    network = ", low-magnification network" if scale.get("network") == "low_magnification" else ""
    return text + network + ")"


def _section_provenance(stores: dict, probs, tables, model, config_files) -> str:
    from grunet.checkpoint import file_sha256

    parts = ["<h2>Provenance</h2><h3>Software</h3>", _table(_versions())]
    model_sha = None
    if model is not None:
        model_sha = file_sha256(model)
        parts.append(
            f"<h3>Model</h3><table><tr><th>checkpoint</th><td>{_esc(Path(model).resolve())}</td></tr>"
            f"<tr><th>sha256</th><td><code>{model_sha}</code></td></tr></table>"
            + _checkpoint_summary(model)
        )
    rows = []
    for store in stores.values():
        attrs = _grunet_attrs(store)
        rows.append(
            {
                "output": str(store),
                "grunet": attrs.get("version", ""),
                "input": attrs.get("source", ""),
                "model sha256": "",
                "nucleus diameter": "",
            }
        )
    mismatched = []
    for path in probs:
        attrs = _grunet_attrs(Path(path))
        sha = attrs.get("model_sha256", "")
        if model_sha and sha and sha != model_sha:
            mismatched.append(str(path))
        rows.append(
            {
                "output": str(path),
                "grunet": attrs.get("version", ""),
                "input": attrs.get("source", ""),
                "model sha256": sha,
                "nucleus diameter": _diameter(attrs.get("object_scale")),
            }
        )
    for path in tables:
        meta = _parquet_provenance(path)
        info = meta.get("grunet", meta)
        info = info if isinstance(info, dict) else {"value": info}
        rows.append(
            {
                "output": str(path),
                "grunet": info.get("version", ""),
                "input": info.get("source", info.get("image", "")),
                "model sha256": info.get("model_sha256", ""),
                "nucleus diameter": _diameter(info.get("object_scale")),
            }
        )
    parts += ["<h3>Outputs</h3>", _table(pd.DataFrame(rows))]
    if mismatched:
        parts.append(
            "<p class='warn'>Probabilities predicted with another model than the one given: "
            f"{_esc(', '.join(mismatched))}</p>"
        )
    for path in config_files:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        parts.append(f"<h3>{_esc(path)}</h3><pre>{_esc(text)}</pre>")
    return "".join(parts)
