"""The QC report of a semantic model's run: class overlays, per-class areas, provenance.

``grunet report --class-areas class_areas.csv --images ...`` (the workflow's report rule for a
semantic model) writes one self-contained HTML page like the instance report
(:mod:`grunet.report`), with class maps in their colours over the image instead of cell
outlines, and per-class area plots instead of counts and size distributions.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from grunet.errors import InputError
from grunet.report import (
    OVERLAY_MAX_SIZE,
    OVERLAY_MIN_WIDTH,
    _esc,
    _figure,
    _img_tag,
    _open_group,
    _png,
    _require,
    _sample_name,
    _section_provenance,
    _section_training,
    _table,
    write_page,
)


def build_semantic_report(
    output: str | Path,
    *,
    class_areas: str | Path,
    images: Sequence[str | Path],
    tables: Sequence[str | Path] = (),
    probs: Sequence[str | Path] = (),
    model: str | Path | None = None,
    train_dir: str | Path | None = None,
    config_files: Sequence[str | Path] = (),
    frames: int = 3,
    max_overlay_samples: int = 48,
    title: str = "grunet report",
    overwrite: bool = False,
) -> Path:
    """Write the QC report of class maps as one self-contained HTML file.

    Args:
        output: the HTML file to write (atomically).
        class_areas: the experiment's class-area CSV (:mod:`grunet.class_area`).
        images: image stores ``<sample>.ome.zarr`` with ``labels/classes``.
        tables: per-sample class-area Parquet tables (their provenance is listed).
        probs, model, train_dir, config_files, frames, max_overlay_samples, title, overwrite:
            as in :func:`grunet.report.build_report`.

    Returns:
        The path of the written report.

    Example:
        >>> build_semantic_report("report.html", class_areas="class_areas.csv",
        ...                       images=["a.ome.zarr"])  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")

    for path in [class_areas, *images, *tables, *probs, *config_files]:
        _require(path)
    if model is not None:
        _require(model)
    if frames < 1:
        raise InputError(None, f"--frames must be >= 1, got {frames}")
    areas = pd.read_csv(class_areas)
    missing = {"sample", "t", "class_name", "pixels", "fraction"} - set(areas.columns)
    if missing:
        raise InputError(class_areas, f"not a class-area table: lacks {sorted(missing)}")
    stores = {_sample_name(p): Path(p) for p in images}
    colours = next((c for c in map(_class_colours, stores.values()) if c), {})
    sections = [
        _section_areas(areas, colours),
        _section_class_overlays(stores, frames, max_overlay_samples),
        _section_training(train_dir) if train_dir is not None else "",
        _section_provenance(stores, probs, tables, model, config_files),
    ]
    return write_page(output, title, sections, overwrite=overwrite)


def _class_colours(store: Path) -> dict[str, tuple[float, float, float]]:
    """{class name: RGB in 0..1} from a store's class map metadata ({} without one)."""
    from grunet.io.readers import ome_attrs

    group = _open_group(store)
    if "labels" not in group or "classes" not in group["labels"]:
        return {}
    meta = ome_attrs(group["labels"]["classes"]).get("image-label") or {}
    rgb = {int(c["label-value"]): c["rgba"][:3] for c in meta.get("colors", [])}
    names = {int(p["label-value"]): p.get("class", "") for p in meta.get("properties", [])}
    return {names[i]: tuple(v / 255.0 for v in rgb[i]) for i in names if i in rgb}


def _section_areas(areas: pd.DataFrame, colours: dict) -> str:
    """Per-class area: fraction of each sample's pixels (bars), and over time where T > 1."""
    import matplotlib.pyplot as plt

    column, unit = "pixels", "px"
    if "area_um2" in areas.columns and areas["area_um2"].notna().any():
        column, unit = "area_um2", "µm²"
    values = list(dict.fromkeys([column, "pixels"]))
    per_sample = areas.groupby(["sample", "class_name"], sort=False)[values].sum()
    per_sample = per_sample.reset_index()
    totals = per_sample.groupby("sample", sort=False)["pixels"].transform("sum")
    per_sample["fraction"] = per_sample["pixels"] / totals.where(totals > 0, 1)
    wide = per_sample.pivot(index="sample", columns="class_name", values="fraction")
    classes = list(dict.fromkeys(areas["class_name"]))
    wide = wide[classes]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.35 * len(wide)))
    palette = [colours[c] for c in classes] if all(c in colours for c in classes) else None
    wide.plot.barh(stacked=True, ax=ax, width=0.8, legend=False, color=palette)
    ax.set_xlabel("fraction of the image")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    parts = [
        "<h2>Class areas</h2>",
        _figure(_png(fig), "Share of each class per sample (all planes)"),
    ]
    if areas["t"].nunique() > 1:
        fig, ax = plt.subplots(figsize=(7, 4))
        over_time = areas.groupby(["t", "class_name"], sort=True)["fraction"].mean().unstack()
        over_time[classes].plot(ax=ax, color=palette)
        ax.set_ylabel("mean fraction over samples")
        ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
        parts.append(_figure(_png(fig), "Class fractions over time"))
    table = per_sample.rename(columns={column: f"{column} ({unit})"})
    return "".join(parts) + _table(table)


def _class_overlay(image: np.ndarray, classes: np.ndarray, colours: np.ndarray) -> bytes:
    """The image (RGB as is, else grey) with the class colours blended over it, as PNG."""
    import matplotlib.image

    image = image.astype(np.float32)
    lo, hi = np.percentile(image, (0.5, 99.5))
    scaled = np.clip((image - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0)
    rgb = np.moveaxis(scaled, 0, -1) if len(scaled) == 3 else np.repeat(scaled[0][..., None], 3, -1)
    blended = 0.45 * rgb + 0.55 * colours[np.minimum(classes, len(colours) - 1)]
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, np.clip(blended, 0, 1), format="png")
    return buf.getvalue()


def _legend_html(names: list[str], colours: np.ndarray) -> str:
    items = "".join(
        f"<span style='display:inline-block;margin-right:1em'><span style='display:inline-block;"
        f"width:1em;height:1em;background:rgb({int(255 * c[0])},{int(255 * c[1])},"
        f"{int(255 * c[2])})'></span> {_esc(n)}</span>"
        for n, c in zip(names, colours)
    )
    return f"<p>{items}</p>"


def _section_class_overlays(stores: dict, frames: int, max_samples: int) -> str:
    from grunet.io.readers import ome_attrs

    parts = [
        "<h2>Class maps</h2><p class='muted'>Each class in its colour over the image (RGB, or "
        f"the first channel), middle z plane; images larger than {OVERLAY_MAX_SIZE} px are "
        "subsampled.</p>"
    ]
    legend_done = False
    for sample, store in list(stores.items())[:max_samples]:
        group = _open_group(store)
        if "labels" not in group or "classes" not in group["labels"]:
            parts.append(
                f"<h3>{_esc(sample)}</h3><p class='warn'>{_esc(store)}: no labels/classes</p>"
            )
            continue
        label_group = group["labels"]["classes"]
        meta = ome_attrs(label_group).get("image-label") or {}
        colours = {int(c["label-value"]): c["rgba"][:3] for c in meta.get("colors", [])}
        names = {int(p["label-value"]): p.get("class", "") for p in meta.get("properties", [])}
        n = max([*colours, *names], default=0) + 1
        palette = np.array([colours.get(i, (128, 128, 128)) for i in range(n)]) / 255.0
        if not legend_done:
            parts.append(_legend_html([names.get(i, str(i)) for i in range(n)], palette))
            legend_done = True
        image, classes = group["0"], label_group["0"]
        n_t, n_c, n_z, n_y, n_x = image.shape
        step = max(1, math.ceil(max(n_y, n_x) / OVERLAY_MAX_SIZE))
        width = OVERLAY_MIN_WIDTH if math.ceil(n_x / step) < OVERLAY_MIN_WIDTH else None
        z = n_z // 2
        times = sorted({round(i * (n_t - 1) / max(frames - 1, 1)) for i in range(min(frames, n_t))})
        parts.append(f"<h3>{_esc(sample)}</h3>")
        channels = slice(0, 3) if n_c == 3 else slice(0, 1)
        for t in times:
            plane = np.asarray(image[t, channels, z, ::step, ::step])
            cmap = np.asarray(classes[t, 0, z, ::step, ::step]).astype(np.int64)
            caption = f"t={t}" + (f", z={z}" if n_z > 1 else "")
            parts.append(
                f"<figure>{_img_tag(_class_overlay(plane, cmap, palette), caption, width)}"
                f"<figcaption>{_esc(caption)}</figcaption></figure>"
            )
    return "".join(parts)
