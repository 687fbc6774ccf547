"""qcore's benchmarks: fp32, qcore and torch.ao measured together (run ``python -m benchmarks.run``).

Not tests: pytest does not collect this folder (files are ``bench_*.py``, and
``testpaths`` are ``tests`` and ``plugins``).
"""
