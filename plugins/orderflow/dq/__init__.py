"""Data quality: Great Expectations suites for master data and the gate that runs them.

- :mod:`orderflow.dq.suites` — one suite per master-data entity, as reviewable code, plus the
  helper columns that cross-entity rules need.
- :mod:`orderflow.dq.gate` — runs the suites between extract and publish, persists every result
  to ``orderflow.dq_result``, opens/resolves ``master_data_quality`` exceptions per entity and
  flags published rows (``dq_passed``).
- :mod:`orderflow.dq.docs` — GX data docs as a static folder under the state directory.

Nothing here imports Great Expectations or pandas at module level (≈3 s and ~200 log lines):
they are imported inside the functions that use them, at task run time.
"""
