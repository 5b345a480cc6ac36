"""Process-wide settings Airflow imports at start-up in every component (``import airflow``
runs ``settings.initialize()``, which imports this module from the plugins folder on
``sys.path``) — before it loads plugins or parses DAGs. Not a plugin: ``.airflowignore``
keeps the plugin loader away from it.

One warnings filter. Airflow 3.3 walks ``plugins/`` (and the DAG folder) honouring
``.airflowignore`` in ``glob`` syntax by compiling each pattern with pathspec's
``GitWildMatchPattern``, which pathspec ≥ 1.0 deprecates; Airflow shows its own modules'
deprecation warnings (``airflow.configuration``), so every process that loads plugins logged
one warning per pattern of ``plugins/.airflowignore`` (735 in one day of the local stack).
The warning is Airflow's to fix (its ``file_discovery`` module) and says nothing about our
patterns, which mean the same under pathspec's replacement. Only that message is silenced:
Airflow's other deprecation warnings stay visible. A ``PYTHONWARNINGS`` filter would not do:
with any ``-W`` option set, Airflow stops adding its own "show Airflow's deprecations" filters.
"""

from __future__ import annotations

import warnings

# Nothing here is a cluster policy or a setting for ``airflow.settings`` to copy.
__all__: list[str] = []

warnings.filterwarnings(
    "ignore",
    message=r"GitWildMatchPattern \('gitwildmatch'\) is deprecated",
    category=DeprecationWarning,
)
