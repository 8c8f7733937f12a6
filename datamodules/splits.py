"""The four Lightning dataloader hooks from one ``_loader(split, shuffle)`` method.

DataModules that hold ``train``/``val``/``test`` splits differ only in how they build a loader
for a split; predicting reads the test split, and only training shuffles.
"""

from __future__ import annotations

from torch.utils.data import DataLoader


class SplitLoadersMixin:
    def _loader(self, split: str, shuffle: bool) -> DataLoader:  # pragma: no cover - each DataModule's own
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
