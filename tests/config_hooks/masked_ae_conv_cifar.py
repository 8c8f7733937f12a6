"""fast_dev_run of this config on a few real CIFAR-10 JPEGs per class (decoding all 35,000 takes too long)."""


def extra_args(tmp_path):
    # the config's own checkpoint folder is the real encoder's (runs/checkpoints/...): keep the test out of it
    return ["--data.init_args.limit_per_class", "10", "--checkpoint.dirpath", str(tmp_path / "checkpoints")]
