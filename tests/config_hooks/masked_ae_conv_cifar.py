"""fast_dev_run of this config on a few real CIFAR-10 JPEGs per class (decoding all 35,000 takes too long)."""


def extra_args(tmp_path):
    return ["--data.init_args.limit_per_class", "10"]
