"""Evaluation of a fine-tuned voice: metrics, ASR backends, stage-8 evaluation, per-epoch evaluation, checkpoint
selection by metric, the HTML report and the data quality report."""
