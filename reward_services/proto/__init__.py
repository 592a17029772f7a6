"""Generated protocol modules (committed) and their .proto sources; see generate.py."""
