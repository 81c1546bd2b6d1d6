rule report:
    """Counts, tables, overlays, training curves and provenance -> one self-contained HTML page."""
    input:
        counts="results/counts.csv",
        tables=expand("results/cells/{sample}.parquet", sample=SAMPLES.index),
        images=expand("results/images/{sample}.ome.zarr", sample=SAMPLES.index),
        labels=expand("results/segment/{sample}.json", sample=SAMPLES.index),
        probs=expand("results/probs/{sample}.probs.zarr", sample=SAMPLES.index),
        model=get_model,
        train=get_train_outputs,
        config_files=get_config_files,
    output:
        html="results/report.html",
    log:
        "results/logs/report.log",
    conda:
        "../../envs/grunet.yaml"
    threads: 1
    params:
        train_dir=get_train_dir_option,
        group_by=option("--group-by", config["report"]["group_by"]),
        frames=config["report"]["frames"],
    shell:
        "grunet report --counts {input.counts} --tables {input.tables} --images {input.images}"
        " --probs {input.probs} --model {input.model} {params.train_dir}"
        " --config-files {input.config_files} {params.group_by} --frames {params.frames}"
        " -o {output.html} --overwrite > {log} 2>&1"
