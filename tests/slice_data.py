"""In-memory slice datasets for trainer unit tests (imported by the test modules; not a test module itself)."""

import torch


class CountingSlices(torch.utils.data.Dataset):
    """``n`` random (1, size, size) images with a learnable two-class label (0 / 2 by intensity), counting reads.

    ``labeled=False`` items carry no ``label`` (an unlabeled stream); ``reads`` lets a test check that a stream
    was or was not consumed.
    """

    def __init__(self, n: int, labeled: bool, size: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 1, size, size, generator=g)
        self.labels = (self.images > 0.5).float() * 2
        self.labeled, self.reads = labeled, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        self.reads += 1
        item = {"image": self.images[i]}
        if self.labeled:
            item["label"] = self.labels[i]
        return item
