"""Generation speed benchmarks (pytest-benchmark, marker `bench`): selected only with `-m bench`."""
