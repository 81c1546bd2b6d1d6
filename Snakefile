"""grunet workflow: raw microscopy experiment -> cell tables, counts and an HTML report.

    snakemake --cores 2                                  # embedded demo, shipped model, CPU
    snakemake --cores 8 --resources gpu=1                # one GPU shared by train/predict jobs
    snakemake --cores 8 --configfile my/config.yaml      # a real experiment
    snakemake --workflow-profile workflow/profiles/slurm # every job submitted to SLURM

Keys: config/README.md. Outputs: results/ (see the rules in workflow/rules/).
"""

from snakemake.utils import min_version

min_version("8.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# Tiny jobs run where snakemake runs instead of waiting in a cluster queue (more in the stages'
# rule files: count.smk, classes.smk).
localrules:
    all,


wildcard_constraints:
    sample="|".join(re.escape(s) for s in SAMPLES.index),


rule all:
    default_target: True
    input:
        all_outputs(),


include: "workflow/rules/convert.smk"
include: "workflow/rules/train.smk"

# The checkpoint's task picks the stages: class maps and class areas, or cells and counts.
if SEMANTIC:

    include: "workflow/rules/classes.smk"

else:

    include: "workflow/rules/predict.smk"
    include: "workflow/rules/segment.smk"
    include: "workflow/rules/measure.smk"
    include: "workflow/rules/count.smk"
    include: "workflow/rules/report.smk"
