"""Commands that sit above the library: grid runner and launchers, GAN evaluation, sample export,
checkpoint conversion. They import ``zoo``; nothing in ``zoo`` outside this package imports them
(``tests/test_architecture.py``)."""
