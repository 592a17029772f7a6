"""Datasets in verl's schema: deterministic synthetic generators per domain and one loader for all formats."""
