if TRAIN:

    rule train:
        """Annotated samples -> GRUU-Net checkpoint, curves and validation metrics."""
        input:
            config=TRAIN_CONFIG,
            images=get_train_images,
            annotations=get_train_annotations,
        output:
            model="results/train/best.pt",
            last="results/train/last.pt",
            log="results/train/log.csv",
            curves="results/train/curves.png",
            metrics="results/train/val_metrics.json",
        log:
            "results/logs/train/train.log",
        conda:
            "../../envs/grunet.yaml"
        threads: config["train"]["threads"]
        resources:
            gpu=1,
        params:
            labels=get_train_labels_option,
            device=config["train"]["device"],
        shell:
            "grunet train -c {input.config} -o results/train --images {input.images}"
            " --labels {params.labels} --device {params.device} > {log} 2>&1"
