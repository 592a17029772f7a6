"""GRPO post-training: pure algorithms, rollout engines, weight transfer, trainer, pipeline, config and CLI."""
