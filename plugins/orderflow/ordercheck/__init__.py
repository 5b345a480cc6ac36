"""The order check (issue #20): a draft order decided by the batch stages' own domain
functions, read-only, in one call — the service (:mod:`.service`) and its HTTP route
(:mod:`.api`, ``POST /orderflow/api/check``)."""
