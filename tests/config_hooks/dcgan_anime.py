"""Decode a few dozen faces, not the config's 5,000, in the fast_dev_run test."""


def extra_args(tmp_path):
    return ["--data.init_args.limit_per_class", "64"]
