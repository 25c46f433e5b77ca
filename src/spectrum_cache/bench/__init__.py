"""Benchmark harness: quality against speedup for Spectrum and the alternatives."""
