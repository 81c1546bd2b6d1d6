rule predict:
    """Image store -> per-pixel class probabilities (tiled, blended), float16 zarr."""
    input:
        image="results/images/{sample}.ome.zarr",
        model=get_model,
    output:
        probs=directory("results/probs/{sample}.probs.zarr"),
    log:
        "results/logs/predict/{sample}.log",
    conda:
        "../../envs/grunet.yaml"
    threads: config["predict"]["threads"]
    resources:
        gpu=1,
    params:
        options=get_predict_options,
    shell:
        "DASK_NUM_WORKERS={threads} grunet predict {input.image} -o {output.probs} --model {input.model}"
        " {params.options} --threads {threads} --overwrite > {log} 2>&1"
