"""Command-line entry points (thin: parse arguments, call library code, report)."""
