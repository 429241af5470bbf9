"""Benchmark grid for recbole-milk: run (variant x missing setting x seed) cells, resume, and report."""
