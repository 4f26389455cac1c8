"""``CardConfig``: which STEs a report card measures, against which references, at which tier."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...activations.config import QuantConfig
from ...errors import check_choice
from ...io import JsonConfig

TIERS = ("quick", "standard", "full")
REFERENCES = ("identity", "relu", "clipped_relu")
LENET_FLOAT = "results/lenet5-mnist-float/model.pt"
RESNET_FLOAT = "results/table1-cifar10-resnet20/seed0/float/model.pt"

# Sizes per tier: the two-layer model (cosine grid points, descent starts and steps), the classifier (steps, seeds of
# the data), the fidelity batches, and the real-network training (epochs, models).
TIER_SIZES = {
    "quick": {"cosine_points": 24, "starts": 6, "descent_steps": 800, "classify_steps": 600, "fidelity_batches": 4,
              "lenet_epochs": 1, "resnet_epochs": 0, "symmetry_samples": 4000, "classify_mnist": 0},
    "standard": {"cosine_points": 60, "starts": 20, "descent_steps": 1000, "classify_steps": 2000,
                 "fidelity_batches": 8, "lenet_epochs": 5, "resnet_epochs": 3, "symmetry_samples": 20000,
                 "classify_mnist": 10000},
}
# full: standard, plus the Table 1 cells (LeNet-5 / MNIST and ResNet-20 / CIFAR-10 at 2 and 4 bits) on the paper's
# schedule (table1_epochs_scale 1: 50 and 200 float epochs), through stelab reproduce table1's own run function
TIER_SIZES["full"] = {**TIER_SIZES["standard"], "table1": 1}


@dataclass(frozen=True)
class CardConfig(JsonConfig):
    """``stes``: the estimators to grade (specs, e.g. ``"leaky_relu(slope=0.1)"``); ``against``: the references
    measured beside them (same data, seeds and schedule); ``tier``: ``quick`` (minutes), ``standard`` (adds
    ResNet-20 on CIFAR-10 and longer LeNet-5 training), ``full`` (standard, plus Table 1 cells: run them with
    ``stelab reproduce table1``); ``lrs``: the learning-rate grid of the training section (each STE is reported at
    its own best rate and at the common one, ``lrs[len(lrs) // 2]``); ``synthetic`` > 0 replaces the real data sets
    by that many random images (tests); ``lenet_init``/``resnet_init``: the float checkpoints fine-tuned from;
    ``table1_epochs_scale``: the full tier's Table 1 schedule as a fraction of the paper's (1: the paper's);
    ``jobs``: training runs at once on this machine, in separate processes sharing its cores (section 6 and the
    Table 1 cells; a place, not a number: it changes no result)."""

    stes: tuple[str, ...] = ()
    against: tuple[str, ...] = REFERENCES
    tier: str = "quick"
    bits: int = 2
    seeds: int = 1
    lrs: tuple[float, ...] = (0.001, 0.01, 0.1)
    synthetic: int = 0
    data_dir: str | None = None
    lenet_init: str = LENET_FLOAT
    resnet_init: str = RESNET_FLOAT
    table1_epochs_scale: float = 1.0
    jobs: int = 1

    def __post_init__(self) -> None:
        check_choice("tier", self.tier, TIERS)
        object.__setattr__(self, "stes", tuple(self.stes))
        object.__setattr__(self, "against", tuple(self.against))
        object.__setattr__(self, "lrs", tuple(float(lr) for lr in self.lrs))
        if not self.stes:
            raise ValueError("name at least one STE to grade, e.g. stelab card 'leaky_relu(slope=0.1)'")
        for spec in self.all_stes():  # an unknown name or parameter, or levels that are not the bits', raise
            QuantConfig(bits=self.bits, ste=spec)
        if not self.lrs or any(not lr > 0 for lr in self.lrs):
            raise ValueError(f"lrs must be positive learning rates, got {list(self.lrs)}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if not self.table1_epochs_scale > 0:
            raise ValueError(f"table1_epochs_scale must be > 0, got {self.table1_epochs_scale}")
        if self.table1_epochs_scale != 1.0 and not TIER_SIZES[self.tier].get("table1"):
            raise ValueError(f"table1_epochs_scale scales the full tier's Table 1 cells; the {self.tier} tier runs "
                             "none: use tier 'full' or drop it")

    def all_stes(self) -> list[str]:
        """The graded STEs, then the references not among them, as canonical labels (no duplicates)."""
        from ... import ste as ste_registry

        labels: list[str] = []
        for spec in (*self.stes, *self.against):
            label = ste_registry.get(spec).label
            if label not in labels:
                labels.append(label)
        return labels

    @property
    def sizes(self) -> dict[str, int]:
        return TIER_SIZES[self.tier]

    def default_out(self) -> Path:
        names = "-".join(s.split("(")[0] for s in self.stes[:3])
        return Path("runs") / f"card-{names}-{self.tier}"


#: What a rerun of a card in the same folder may change: more STEs, references, seeds or rates add cells and leave the
#: cached ones valid, and the data folder and the number of jobs are places; every other field (tier, bits,
#: synthetic, the float checkpoints) changes cached numbers, so it must agree (stelab.train.config.may_change's twin).
MAY_CHANGE = ("stes", "against", "seeds", "lrs", "data_dir", "jobs")


def differences(saved: dict, new: CardConfig) -> list[str]:
    """``["tier: 'quick' -> 'standard'", ...]``: what ``new`` changes of a saved config (its JSON, as it may name STEs
    not registered now) beyond :data:`MAY_CHANGE`; a field the saved one lacks takes its default."""
    b, d = new.to_dict(), CardConfig(stes=("identity",)).to_dict()
    return [f"{k}: {saved.get(k, d[k])!r} -> {b[k]!r}" for k in b if k not in MAY_CHANGE and saved.get(k, d[k]) != b[k]]


def ranked_by(stes: dict[str, dict]) -> tuple[str, str]:
    """``(section, network)`` the ranking uses: ResNet-20 / CIFAR-10 where the tier trained it, else LeNet-5."""
    if all("train_resnet20" in s for s in stes.values()):
        return "train_resnet20", "ResNet-20 / CIFAR-10"
    return "train", "LeNet-5 / MNIST"
