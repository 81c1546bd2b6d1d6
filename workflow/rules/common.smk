"""Configuration and sample-sheet validation, and the input functions of every rule.

Nothing here computes results: it checks the configuration at start-up (so a typo or a missing
file fails before any job runs, naming the key or the sample-sheet row) and tells each rule which
files it reads and which options it passes to the `grunet` command.
"""

import importlib.util
import os
import re
import shlex

import jsonschema
import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# Sample-sheet columns with a meaning; every other column is free metadata (well, condition, ...).
SHEET_COLUMNS = (
    "sample",
    "path",
    "annotation",
    "axes",
    "channel_names",
    "pixel_size",
    "scene",
    "channels",
    "diameter",
)
# Metadata may not shadow the columns grunet itself writes into tables and counts.
RESERVED_METADATA = ("t", "c", "z", "label", "n_cells", "source")
DEMO_PREFIX = "demo:"


def schema_problem(err):
    """One line naming the offending key for a snakemake.utils.validate failure."""
    # validate() raises its WorkflowError while handling the jsonschema error
    cause = err.__cause__ or err.__context__
    if not isinstance(cause, jsonschema.ValidationError):
        return str(err).strip().splitlines()[0]
    key = ".".join(str(p) for p in cause.absolute_path)
    if cause.validator == "additionalProperties":
        known = sorted(cause.schema.get("properties", {}))
        unknown = sorted(set(cause.instance) - set(known))
        where = f"{key}." if key else ""
        names = ", ".join(f"'{where}{u}'" for u in unknown)
        of = f" of '{key}'" if key else ""
        return f"unknown key {names} (known keys{of}: {', '.join(known)})"
    if not key:  # e.g. a column name that is not an identifier
        return cause.message
    return f"key '{key}': {cause.message}"


def validate_config():
    try:
        validate(config, "../schemas/config.schema.yaml")
    except WorkflowError as err:
        raise WorkflowError(f"invalid config: {schema_problem(err)}") from None


def demo_problem(path):
    """Why a demo:<name> input cannot be read, or None (grunet.demo resolves the name)."""
    try:
        from grunet.demo import resolve_demo
    except ImportError:  # grunet only in the jobs' conda env: the convert job checks it
        return None
    try:
        resolve_demo(path)
    except Exception as err:  # unknown name, or the demo extra is not installed
        return str(err).strip() or type(err).__name__
    return None


def input_problem(path):
    """Why a sample-sheet path cannot be used, or None."""
    if path.startswith(DEMO_PREFIX):
        return demo_problem(path)
    if not os.path.exists(path):
        return f"'{path}' does not exist (paths are relative to {os.getcwd()})"
    return None


def file_scenes(path, where):
    """Scene names of a raw image; None where grunet is not importable here (no expansion)."""
    if path.startswith(DEMO_PREFIX) or os.path.isdir(path):
        return None  # demo images, zarr and OME-Zarr hold one image
    try:
        from grunet.errors import GrunetError
        from grunet.io.readers import list_scenes
    except ImportError:  # grunet only in the jobs' conda env: the convert job reads the file
        return None
    try:
        return list_scenes(path)
    except GrunetError as err:
        raise WorkflowError(f"{where}: column 'path': {err}") from None


def scene_rows(record, where):
    """The sample rows of one sheet row: one per scene of a multi-scene file when 'scene' is
    empty (named <sample>_s<k>), else the row itself."""
    if record.get("scene", ""):
        return [record]
    scenes = file_scenes(record["path"], where)
    if not scenes or len(scenes) == 1:
        return [record]
    if record["annotation"]:
        raise WorkflowError(
            f"{where}: column 'scene': '{record['path']}' has {len(scenes)} scenes "
            f"({', '.join(scenes)}); an annotated row needs the scene its labels belong to"
        )
    return [
        {**record, "sample": f"{record['sample']}_s{k}", "scene": str(k)}
        for k in range(len(scenes))
    ]


def load_samples(sheet):
    """Read and check the sample sheet; fail naming the row and column of the first problem."""
    if not os.path.isfile(sheet):
        raise WorkflowError(
            f"config key 'samples': sample sheet '{sheet}' does not exist"
        )
    table = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False, comment="#")
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("sample", "path") if c not in table.columns]
    if missing:
        raise WorkflowError(
            f"{sheet}: missing column(s) {', '.join(missing)} (the header needs sample and path)"
        )
    reserved = [c for c in table.columns if c in RESERVED_METADATA]
    if reserved:
        raise WorkflowError(
            f"{sheet}: column(s) {', '.join(reserved)} are reserved for grunet's own table columns"
        )
    rows = []
    for number, record in enumerate(table.to_dict("records"), start=1):
        record = {key: str(value).strip() for key, value in record.items()}
        where = f"{sheet} row {number} (sample '{record.get('sample', '')}')"
        try:
            validate(record, "../schemas/samples.schema.yaml")
        except WorkflowError as err:
            raise WorkflowError(f"{where}: {schema_problem(err)}") from None
        for column in ("path", "annotation"):
            if record[column]:
                problem = input_problem(record[column])
                if problem:
                    raise WorkflowError(f"{where}: column '{column}': {problem}")
        rows.extend(scene_rows(record, where))
    if not rows:
        raise WorkflowError(f"{sheet}: no samples (one row per image is needed)")
    samples = pd.DataFrame(rows).set_index("sample", drop=False)
    duplicated = samples.index[samples.index.duplicated()].unique().tolist()
    if duplicated:
        numbers = {name: [] for name in duplicated}
        for number, name in enumerate(samples.index, start=1):
            if name in numbers:
                numbers[name].append(str(number))
        names = "; ".join(
            f"'{n}' (rows {', '.join(rows)})" for n, rows in numbers.items()
        )
        raise WorkflowError(f"{sheet}: duplicate sample name(s) {names}")
    return samples


validate_config()
SAMPLES = load_samples(config["samples"])
METADATA = [c for c in SAMPLES.columns if c not in SHEET_COLUMNS]
TRAIN = config["train"]["enabled"]


def training_samples():
    """Samples whose annotations train the model (train.samples, else every annotated one)."""
    names = config["train"]["samples"] or [
        s for s in SAMPLES.index if SAMPLES.loc[s, "annotation"]
    ]
    for name in names:
        if name not in SAMPLES.index:
            raise WorkflowError(f"config key 'train.samples': unknown sample '{name}'")
        if not SAMPLES.loc[name, "annotation"]:
            raise WorkflowError(
                f"config key 'train.samples': sample '{name}' has no annotation in {config['samples']}"
            )
    if TRAIN and not names:
        raise WorkflowError(
            "config key 'train.enabled': no sample in the sample sheet has an annotation to train on"
        )
    return names


TRAIN_SAMPLES = training_samples()  # checked even when training is off


def train_config():
    """train.config, relative to the working directory or else to the workflow's folder."""
    path = config["train"]["config"]
    for candidate in (path, os.path.join(workflow.basedir, path)):
        if os.path.isfile(candidate):
            return candidate
    raise WorkflowError(f"config key 'train.config': '{path}' does not exist")


TRAIN_CONFIG = train_config() if TRAIN else None


def shipped_model():
    """Path of the demo checkpoint shipped inside the grunet package (found without importing it)."""
    spec = importlib.util.find_spec("grunet")
    package = (
        os.path.dirname(spec.origin)
        if spec
        else os.path.join(workflow.basedir, "grunet")
    )
    return os.path.join(package, "weights", "small_dsb2018.pt")


def check_model():
    if TRAIN:
        return "results/train/best.pt"
    model = config["model"] or shipped_model()
    if not os.path.isfile(model):
        key = "config key 'model'" if config["model"] else "shipped model"
        raise WorkflowError(f"{key}: checkpoint '{model}' does not exist")
    return model


MODEL = check_model()


def model_task():
    """instance or semantic: the training config's task when training, else the checkpoint's."""
    if TRAIN:
        import yaml

        with open(TRAIN_CONFIG) as fh:
            return (yaml.safe_load(fh) or {}).get("task") or "instance"
    try:
        from grunet.errors import GrunetError
        from grunet.semantic_evaluate import checkpoint_task
    except ImportError:  # grunet only in the jobs' conda env: the instance stages
        return "instance"
    try:
        return checkpoint_task(MODEL)[0]
    except GrunetError as err:
        raise WorkflowError(f"config key 'model': {err}") from None


SEMANTIC = model_task() == "semantic"


def option(flag, value):
    """'--flag value' (shell-quoted), or '' when value is None or empty."""
    if value is None or value == "":
        return ""
    return f"{flag} {shlex.quote(str(value))}"


def local_inputs(paths):
    """The paths that are files or folders (demo: names are resolved by grunet, not Snakemake)."""
    return [p for p in paths if p and not p.startswith(DEMO_PREFIX)]


# ----------------------------------------------------------------------------- input functions


def get_raw_image(wildcards):
    return local_inputs([SAMPLES.loc[wildcards.sample, "path"]])


def get_convert_options(wildcards):
    row = SAMPLES.loc[wildcards.sample]
    defaults = config["convert"]
    return " ".join(
        o
        for o in (
            option("--axes", row["axes"] or defaults["axes"]),
            option(
                "--channel-names", row["channel_names"] or defaults["channel_names"]
            ),
            option("--pixel-size", row["pixel_size"] or defaults["pixel_size"]),
            option("--scene", row["scene"]),
        )
        if o
    )


def get_source(wildcards):
    return shlex.quote(SAMPLES.loc[wildcards.sample, "path"])


def get_train_images(wildcards):
    return expand("results/images/{sample}.ome.zarr", sample=TRAIN_SAMPLES)


def get_train_annotations(wildcards):
    return local_inputs([SAMPLES.loc[s, "annotation"] for s in TRAIN_SAMPLES])


def get_train_labels_option(wildcards):
    return " ".join(shlex.quote(SAMPLES.loc[s, "annotation"]) for s in TRAIN_SAMPLES)


def get_model(wildcards):
    return MODEL


def get_diameter_option(wildcards):
    """The sample's nucleus diameter: its sheet column, else predict.diameter / diameter_um."""
    row = SAMPLES.loc[wildcards.sample]
    p = config["predict"]
    if row.get("diameter", ""):
        return option("--diameter", row["diameter"])
    return option("--diameter", p["diameter"]) or option("--diameter-um", p["diameter_um"])


def get_predict_options(wildcards):
    p = config["predict"]
    return " ".join(
        o
        for o in (
            option("--channels", SAMPLES.loc[wildcards.sample, "channels"]),
            get_diameter_option(wildcards),
            option("--tile", p["tile"]),
            option("--halo", p["halo"]),
            option("--batch-size", p["batch_size"]),
            option("--device", p["device"]),
            option("--compile", p["compile"]),
            option("--mode", config["segment"]["mode"]),
            option("--anisotropy", p.get("anisotropy")),
            "--augment" if p.get("augment") else "",
        )
        if o
    )


def get_semantic_predict_options(wildcards):
    p = config["predict"]
    return " ".join(
        o
        for o in (
            option("--channels", SAMPLES.loc[wildcards.sample, "channels"]),
            option("--tile", p["tile"]),
            option("--halo", p["halo"]),
            option("--batch-size", p["batch_size"]),
            option("--device", p["device"]),
            option("--compile", p["compile"]),
            "--augment" if p.get("augment") else "",
        )
        if o
    )


def get_segment_options(wildcards):
    s = config["segment"]
    return " ".join(
        o
        for o in (
            option("--min-size", s["min_size"]),
            option("--mode", s["mode"]),
            option("--seed-threshold", s["seed_threshold"]),
            option("--foreground-threshold", s["foreground_threshold"]),
        )
        if o
    )


def get_meta_options(wildcards):
    row = SAMPLES.loc[wildcards.sample]
    if not METADATA:
        return ""
    return "--meta " + " ".join(shlex.quote(f"{key}={row[key]}") for key in METADATA)


def get_train_dir_option(wildcards):
    return "--train-dir results/train" if TRAIN else ""


def get_train_outputs(wildcards):
    return ["results/train/log.csv", "results/train/val_metrics.json"] if TRAIN else []


def get_config_files(wildcards):
    return [f for f in workflow.configfiles if os.path.isfile(f)] + [config["samples"]]


def all_outputs():
    if SEMANTIC:
        return [
            "results/class_areas.csv",
            "results/report.html",
            *expand("results/classes/{sample}.parquet", sample=SAMPLES.index),
        ]
    return [
        "results/counts.csv",
        "results/report.html",
        *expand("results/cells/{sample}.parquet", sample=SAMPLES.index),
        *expand("results/segment/{sample}.json", sample=SAMPLES.index),
    ]
