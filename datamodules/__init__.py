"""LightningDataModules of the zoo. Each owns download, preparation, caching and splits.

Importing this package has no side effects; the CLI imports each module to register its
classes. Data locations: ``data_dir`` argument, else ``$ZOO_DATA_DIR``, else ``./data``;
caches: ``cache_dir`` argument, else ``$ZOO_CACHE_DIR``, else ``~/.cache/zoo``. Every DataModule speaks
one vocabulary of settings, checked by their type hints (:mod:`datamodules.settings`), and every
train/validation/test split is drawn by :mod:`datamodules.splits`.
"""
