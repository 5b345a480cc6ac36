"""Inbound channel parsers and outbound documents (docs/architecture.md §1).

Each channel turns what a partner sent (X12 interchanges, portal JSON, PDF/e-mail, CSV)
into canonical :mod:`orderflow.domain.models` objects, and builds what we send back
(997/TA1 acknowledgments, later 855/856/810). Pure Python: no Airflow, no database, no
network. Bad input never raises: parsers return structured results that carry
:class:`~orderflow.domain.models.IntakeError` values a person can act on.
"""
