"""Metrics for SAEs of any supported library (spec ``shared/papers/aligned_training.md`` §2 and §6).

Framework-free: plain torch / numpy / scipy / matplotlib, models are read by duck typing (no SAELens or
dictionary_learning import here).

* :func:`encoder_decoder_rows`: encoder and decoder rows ``[F, d]`` of a SAELens SAE, a dictionary_learning
  dictionary or a plugin aligned dictionary.
* :func:`alignment_report`: ``a_i = ⟨e_i, d_i⟩`` in three normalisations, bimodality, deviation from 1.
* :func:`dead_fraction`: latents that never fire over a token window.
* :func:`cross_seed_stability`: decoder / encoder mean max cosine and Hungarian matching between two SAEs.
* :func:`plot_alignment_histograms`: one PNG comparing score distributions.
* :func:`identifiability`, :func:`match_dictionaries`, :func:`omp_codes`, :func:`arip_measurement`,
  :func:`rip_on_pairs`: identifiable-SAE metrics (DCS, IoU, ℓ2, OMP oracle, R_S, δ_S; ``shared/papers/isae.md`` §5).
"""

from sae_aligned_plugin.metrics.alignment import (
    BIMODALITY_THRESHOLD,
    AlignmentReport,
    alignment_report,
    alignment_report_from_rows,
    bimodality_coefficient,
)
from sae_aligned_plugin.metrics.cofiring import CofiringCounter, CofiringReport, cofiring, phi_from_counts
from sae_aligned_plugin.metrics.dead import DeadFeatureReport, dead_fraction
from sae_aligned_plugin.metrics.identifiability import (
    CodeAgreement,
    IdentifiabilityReport,
    RIPReport,
    arip_measurement,
    code_agreement,
    identifiability,
    rip_on_pairs,
)
from sae_aligned_plugin.metrics.matching import DictionaryMatching, match_dictionaries
from sae_aligned_plugin.metrics.oracle import omp_codes
from sae_aligned_plugin.metrics.plots import plot_alignment_histograms
from sae_aligned_plugin.metrics.seeds import SeedComparison, compare_seeds
from sae_aligned_plugin.metrics.stability import (
    StabilityReport,
    cross_seed_stability,
    cross_seed_stability_from_rows,
    max_cosine,
)
from sae_aligned_plugin.metrics.weights import encoder_decoder_rows

__all__ = [
    "BIMODALITY_THRESHOLD",
    "AlignmentReport",
    "CofiringCounter",
    "CofiringReport",
    "CodeAgreement",
    "DictionaryMatching",
    "IdentifiabilityReport",
    "RIPReport",
    "DeadFeatureReport",
    "SeedComparison",
    "StabilityReport",
    "alignment_report",
    "alignment_report_from_rows",
    "arip_measurement",
    "bimodality_coefficient",
    "cofiring",
    "compare_seeds",
    "code_agreement",
    "cross_seed_stability",
    "cross_seed_stability_from_rows",
    "dead_fraction",
    "encoder_decoder_rows",
    "identifiability",
    "match_dictionaries",
    "max_cosine",
    "phi_from_counts",
    "omp_codes",
    "plot_alignment_histograms",
    "rip_on_pairs",
]
