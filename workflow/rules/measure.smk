rule measure:
    """Labels + image -> one row per cell per (t, z) plane, with the sample-sheet metadata."""
    input:
        image="results/images/{sample}.ome.zarr",
        labels="results/segment/{sample}.json",
    output:
        table="results/cells/{sample}.parquet",
        csv="results/cells/{sample}.csv",
    log:
        "results/logs/measure/{sample}.log",
    conda:
        "../../envs/grunet.yaml"
    threads: config["measure"]["threads"]
    params:
        meta=get_meta_options,
    shell:
        "DASK_NUM_WORKERS={threads} grunet measure {input.image} -o {output.table} --labels cells"
        " --sample {wildcards.sample} {params.meta} --overwrite > {log} 2>&1"
