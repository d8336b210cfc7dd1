"""The parts of ``python -m tools migrate`` (tools/migrate.py is the command): the legacy PACS and our
gateway as DIMSE peers (:mod:`.dimse`), the run's state file (:mod:`.state`), the throttle
(:mod:`.throttle`) and the run itself (:mod:`.runner`)."""
