# The labels are written inside the image store (<sample>.ome.zarr/labels/cells, the OME-Zarr
# layout napari opens). A Snakemake output may not lie inside another rule's directory() output
# (ChildIOException), so this rule's output is a sentinel JSON written by `grunet segment -o` after
# the labels are complete. The store's mtime is its .snakemake_timestamp, so adding labels does not
# make predict look outdated.
rule segment:
    """Probabilities -> uint32 instance labels in <sample>.ome.zarr/labels/cells."""
    input:
        probs="results/probs/{sample}.probs.zarr",
        image="results/images/{sample}.ome.zarr",
    output:
        done="results/segment/{sample}.json",
    log:
        "results/logs/segment/{sample}.log",
    conda:
        "../../envs/grunet.yaml"
    threads: config["segment"]["threads"]
    params:
        options=get_segment_options,
    shell:
        "DASK_NUM_WORKERS={threads} grunet segment {input.probs} --image {input.image} --name cells {params.options}"
        " --overwrite -o {output.done} > {log} 2>&1"
