"""Offline experiments built on the plugin: ``sae-aligned compare`` (the project's main job).

* :mod:`~sae_aligned_plugin.experiments.arms`: the compared architectures (baseline / plugin pairs).
* :mod:`~sae_aligned_plugin.experiments.data`: the two embedded data sources (SAELens synthetic ground truth,
  MiniLM residual-stream activations on the standard library's pydoc text) and the fixed-batch data provider.
* :mod:`~sae_aligned_plugin.experiments.runs`: training one SAE with SAELens's ``SAETrainer`` and evaluating it.
* :mod:`~sae_aligned_plugin.experiments.report`: aggregation over seeds, the markdown table, atomic outputs.
* :mod:`~sae_aligned_plugin.experiments.compare`: command-line flags and orchestration.
"""
