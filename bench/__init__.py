"""Benchmarks: run with ./hotline bench."""
