"""A local runtime for Azure Functions Python v2 apps: Azurite, an Event Grid-compatible event fabric,
and a host that runs any ``func.FunctionApp`` where Azure Functions Core Tools is not installed.

It knows no app: the app comes from ``--app``, its settings from its ``local.settings.json`` (or
``--settings``) and ``--env``, its subscriptions from ``--events``. Run as ``python -m devhost <command>``.
"""
