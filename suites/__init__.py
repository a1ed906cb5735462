"""sft-eval's suites, shipped in the package as `sft_eval.suites`: `pytest --pyargs sft_eval.suites --sft-recipe R`
runs them from any folder after a plain install; in this repository `pytest suites/` runs the same files."""
