"""Market and account features: the one definition shared by live trading, replay and training.

Modules, in dependency order: `schema` (names, definitions, scaling class, schema hash, account
vector), `kernel` (per-bar raw-feature arithmetic), `scaling` (robust scaling and the lazy
cache of scaled rows), `buffer` (the streaming `FeatureBuffer`/`FeatureBook` a strategy reads),
`dataset` (whole-history matrices for training). Nothing here does I/O.
"""
