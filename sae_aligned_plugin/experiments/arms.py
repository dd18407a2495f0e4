"""The compared architectures, as data: the loop in :mod:`~sae_aligned_plugin.experiments.compare` only reads this.

An :class:`Arm` names a registered SAELens training architecture, the *hyperparameter family* whose settings it
trains with, and the baseline it is compared against (``None`` for a baseline). A plugin arm shares its baseline's
family settings (sizes, L1 coefficient or k); an aligned arm adds nothing (the method has no hyperparameters), the
iSAE and MetaSAE arms add their method's settings at the architecture's defaults (the papers' values) unless a
source plan overrides them (``SourcePlan.architecture_params`` in :mod:`~sae_aligned_plugin.experiments.compare`).
The table lists arms in this order, so each plugin arm sits right below its baseline. To compare a new pair, append
two entries (and, for a new family, add its settings to the plans in
:mod:`~sae_aligned_plugin.experiments.compare`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    architecture: str
    """Registered SAELens training architecture (``TrainingSAEConfig.from_dict({"architecture": ...})``)."""
    family: str
    """Key of the per-source hyperparameters it trains with (e.g. ``"standard"`` → ``l1_coefficient``)."""
    baseline: str | None = None
    """Architecture of the arm it is compared against; ``None`` for a baseline."""

    @property
    def sign_invariant(self) -> bool:
        """Its codes are signed (AbsTopK family, from the registry), so a latent and its negation are the same
        feature: cross-seed stability matches on ``|cos|``."""
        from sae_aligned_plugin.saebench.adapter import architecture_has_signed_codes

        return architecture_has_signed_codes(self.architecture)


ARMS: tuple[Arm, ...] = (
    Arm("standard", family="standard"),
    Arm("aligned_standard", family="standard", baseline="standard"),
    Arm("topk", family="topk"),
    Arm("aligned_topk", family="topk", baseline="topk"),
    Arm("isae", family="topk", baseline="topk"),
    Arm("isae_me", family="topk", baseline="topk"),
    Arm("batchtopk", family="batchtopk"),
    Arm("metasae_batchtopk", family="batchtopk", baseline="batchtopk"),
)


def select_arms(names: list[str] | None, arms: tuple[Arm, ...] = ARMS) -> list[Arm]:
    """The arms named in ``names`` (all if ``None``), in table order; unknown names raise ``ValueError``."""
    if names is None:
        return list(arms)
    known = {arm.architecture for arm in arms}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; known arms: {', '.join(arm.architecture for arm in arms)}")
    return [arm for arm in arms if arm.architecture in names]
