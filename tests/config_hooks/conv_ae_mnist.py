"""conv_ae_mnist: smaller evaluation batches and t-SNE subsample keep the fast_dev_run test quick
(fast_dev_run still runs 2 evaluation batches, of 1,000 images by default, and t-SNE of 1,000 codes)."""

from pathlib import Path


def extra_args(tmp_path: Path) -> list[str]:
    return ["--data.eval_batch_size", "250", "--model.tsne_samples", "100"]
