"""Isolated execution of untrusted code and test harnesses, as a library and as an HTTP service."""
