"""Datasets in verl's schema: deterministic synthetic generators per domain and one loader for all formats."""

# sft.data.synthetic (DOMAINS, generate_datasets) is left out on purpose: it is also run as
# `python -m sft.data.synthetic`, and importing it here would make runpy warn about a double import.
from sft.data.chat_prompts import generate_chat
from sft.data.code_problems import generate_code
from sft.data.ifeval_prompts import generate_ifeval
from sft.data.loader import DataError, iter_rows, load_rows, validate_row
from sft.data.math_problems import generate_math

__all__ = [
    "DataError",
    "generate_chat",
    "generate_code",
    "generate_ifeval",
    "generate_math",
    "iter_rows",
    "load_rows",
    "validate_row",
]
