rule convert:
    """Raw image (any supported format, or demo:<name>) -> canonical OME-Zarr store (TCZYX)."""
    input:
        raw=get_raw_image,
    output:
        store=directory("results/images/{sample}.ome.zarr"),
    log:
        "results/logs/convert/{sample}.log",
    conda:
        "../../envs/grunet.yaml"
    threads: config["convert"]["threads"]
    params:
        source=get_source,
        options=get_convert_options,
    shell:
        "DASK_NUM_WORKERS={threads} grunet convert {params.source} -o results/images --name {wildcards.sample}"
        " {params.options} --overwrite > {log} 2>&1"
