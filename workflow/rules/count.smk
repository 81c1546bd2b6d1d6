localrules:
    count,
    aggregate_counts,


rule count:
    """Per-cell table -> cell counts per (sample, t)."""
    input:
        table="results/cells/{sample}.parquet",
    output:
        counts="results/counts/{sample}.csv",
    log:
        "results/logs/count/{sample}.log",
    conda:
        "../../envs/grunet.yaml"
    threads: 1
    shell:
        "grunet count {input.table} -o {output.counts} --overwrite > {log} 2>&1"


rule aggregate_counts:
    """Counts of every sample -> the experiment's counts.csv."""
    input:
        counts=expand("results/counts/{sample}.csv", sample=SAMPLES.index),
    output:
        counts="results/counts.csv",
    log:
        "results/logs/aggregate_counts.log",
    conda:
        "../../envs/grunet.yaml"
    threads: 1
    shell:
        "grunet count {input.counts} -o {output.counts} --overwrite > {log} 2>&1"
