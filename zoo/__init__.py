"""zoo: classic deep-learning experiments as config-driven, tested LightningModules.

Importing ``zoo`` has no side effects: model modules are imported lazily by the CLI
(:mod:`zoo.cli`) so that ``--model ShortName`` resolves, and by users who import them directly.
"""

__version__ = "0.3.16"
