"""Reference models with real or reproducible weights, for the demo, the tests and the benchmarks."""
