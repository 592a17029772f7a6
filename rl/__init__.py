"""GRPO post-training: pure algorithms, the step's prompts, rollout engines and rewards, trainer, weight transfer, the run.

Follow one step in `rl.grpo.grpo_step`. Modules: `rl.config` (recipe schema), `rl.algos` (advantages, losses, KL:
pure math, with its siblings `rl.policy_losses`, `rl.advantage_estimators`, `rl.rollout_correction`,
`rl.algo_extras` and `rl.presets`), `rl.prompts` (what a step trains on), `rl.rollout` (the rollout side: engines,
scheduling, scored batches), `rl.scheduler` (requests over engines by load), `rl.actors` (Ray actors of both sides),
`rl.trainer` (policy update), `rl.weight_sync` (trainer -> engine weights), `rl.heldout` (held-out accuracy),
`rl.checkpoint`, `rl.grpo` (the step and the run).
"""
