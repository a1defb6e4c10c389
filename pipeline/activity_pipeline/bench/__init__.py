"""Benchmarks of the pipeline's parts; each prints its figures and compares designs in one run."""
