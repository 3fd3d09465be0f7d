"""The model layer: what a candidate is (`spec`), its building blocks (`blocks`), the network (`network`), its
inference form (`deploy`), the paper baselines (`presets`), its size (`cost`) and the block contract (`testing`)."""
