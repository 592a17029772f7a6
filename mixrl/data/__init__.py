"""Making datasets in verl's schema: deterministic synthetic generators per domain (reading any dataset is `core.data`)."""

# mixrl.data.synthetic (DOMAINS, generate_datasets, ensure_datasets) is left out on purpose: it is also run as
# `python -m mixrl.data.synthetic`, and importing it here would make runpy warn about a double import.
from mixrl.data.chat_prompts import generate_chat
from mixrl.data.code_problems import generate_code
from mixrl.data.ifeval_prompts import generate_ifeval
from mixrl.data.math_problems import generate_math
from mixrl.data.stem_problems import generate_stem
from mixrl.data.summary_tasks import generate_summary

__all__ = ["generate_chat", "generate_code", "generate_ifeval", "generate_math", "generate_stem", "generate_summary"]
