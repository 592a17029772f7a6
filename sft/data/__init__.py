"""Datasets in verl's schema: deterministic synthetic generators per domain and one loader for all formats."""

from sft.data.chat_prompts import generate_chat
from sft.data.code_problems import generate_code
from sft.data.ifeval_prompts import generate_ifeval
from sft.data.loader import DataError, iter_rows, load_rows, validate_row
from sft.data.math_problems import generate_math
from sft.data.synthetic import DOMAINS, generate_datasets

__all__ = [
    "DOMAINS",
    "DataError",
    "generate_chat",
    "generate_code",
    "generate_datasets",
    "generate_ifeval",
    "generate_math",
    "iter_rows",
    "load_rows",
    "validate_row",
]
