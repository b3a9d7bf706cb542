"""Training of the HRM and the flat baseline (STYLE: training lives apart from the model files).

Modules, in dependency order: `targets` (forward-looking targets from bars), `losses` (the
supervised losses), `data` (time splits, per-series features and targets, batches), `train`
(the supervised loop), `episodes` (offline trading episodes charging the paper broker's costs),
`rl` (rule calibration and the PPO fine-tune of the policy heads) and `recipe` (the whole
`trader train` recipe, to a checkpoint). The models themselves, their checkpoints and streaming
inference stay in `strategies.hrm`, which must not import this package.
"""
