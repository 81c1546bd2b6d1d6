# Semantic models (N classes; the task is read from the checkpoint in common.smk): prediction
# writes the probabilities, the class map inside the image store (<sample>.ome.zarr/labels/classes,
# which napari shows in the class colours) and the sample's class-area table in one job; there is
# no segment / measure / count stage.


localrules:
    aggregate_class_areas,


rule predict_classes:
    """Image store -> N-class probabilities, labels/classes and the class-area table."""
    input:
        image="results/images/{sample}.ome.zarr",
        model=get_model,
    output:
        probs=directory("results/probs/{sample}.probs.zarr"),
        table="results/classes/{sample}.parquet",
        csv="results/classes/{sample}.csv",
    log:
        "results/logs/predict/{sample}.log",
    conda:
        "../../envs/grunet.yaml"
    threads: config["predict"]["threads"]
    resources:
        gpu=1,
    params:
        options=get_semantic_predict_options,
        meta=get_meta_options,
    shell:
        "DASK_NUM_WORKERS={threads} grunet predict {input.image} -o {output.probs} --model {input.model}"
        " --areas {output.table} {params.options} {params.meta} --threads {threads} --overwrite > {log} 2>&1"


rule aggregate_class_areas:
    """Class-area tables of every sample -> the experiment's class_areas.csv."""
    input:
        tables=expand("results/classes/{sample}.parquet", sample=SAMPLES.index),
    output:
        areas="results/class_areas.csv",
    log:
        "results/logs/aggregate_class_areas.log",
    conda:
        "../../envs/grunet.yaml"
    threads: 1
    shell:
        "grunet count {input.tables} -o {output.areas} --overwrite > {log} 2>&1"


rule report_classes:
    """Class maps over the images, per-class areas and provenance -> one HTML page."""
    input:
        areas="results/class_areas.csv",
        tables=expand("results/classes/{sample}.parquet", sample=SAMPLES.index),
        images=expand("results/images/{sample}.ome.zarr", sample=SAMPLES.index),
        probs=expand("results/probs/{sample}.probs.zarr", sample=SAMPLES.index),
        model=get_model,
        config_files=get_config_files,
    output:
        html="results/report.html",
    log:
        "results/logs/report.log",
    conda:
        "../../envs/grunet.yaml"
    threads: 1
    params:
        frames=config["report"]["frames"],
    shell:
        "grunet report --class-areas {input.areas} --tables {input.tables} --images {input.images}"
        " --probs {input.probs} --model {input.model} --config-files {input.config_files}"
        " --frames {params.frames} -o {output.html} --overwrite > {log} 2>&1"
