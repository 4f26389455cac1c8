"""The published numbers we reproduce, as data: Yin et al. (ICLR 2019), Table 1.

``TABLE1[(model, bits, ste)] = (training loss, validation accuracy in %)``; MNIST for LeNet-5, CIFAR-10 for VGG-11
and ResNet-20; the STEs are the identity, the ReLU and the clipped ReLU.
"""

from __future__ import annotations

from ...ste import PAPER_STES

# Table 1's columns, in its order.
STES = PAPER_STES
MODELS_BY_DATASET = {"mnist": ("lenet5",), "cifar10": ("vgg11", "resnet20")}

_ROWS = {
    ("lenet5", 2): ((2.6e-2, 98.49), (5.1e-3, 99.24), (5.4e-3, 99.23)),
    ("lenet5", 4): ((6.0e-3, 98.98), (9.0e-4, 99.32), (8.8e-4, 99.24)),
    ("vgg11", 2): ((0.19, 86.58), (0.10, 88.69), (0.02, 90.92)),
    ("vgg11", 4): ((3.1e-2, 90.19), (1.5e-3, 92.01), (1.3e-3, 92.08)),
    ("resnet20", 2): ((1.56, 46.52), (1.50, 48.05), (0.24, 88.39)),
    ("resnet20", 4): ((1.38, 54.16), (0.25, 86.59), (0.04, 91.24)),
}

TABLE1: dict[tuple[str, int, str], tuple[float, float]] = {
    (model, bits, ste): cell for (model, bits), cells in _ROWS.items() for ste, cell in zip(STES, cells)
}


# The paper gives no widths for its LeNet-5; both of our variants are compared with its LeNet-5 row.
PAPER_MODEL = {"lenet5-caffe": "lenet5"}


def paper_cell(model: str, bits: int, ste: str) -> tuple[float, float] | None:
    return TABLE1.get((PAPER_MODEL.get(model, model), bits, ste))
