"""Questions asked of a memory: evaluation, the experiments, attribution, curation, OOD, plots."""
