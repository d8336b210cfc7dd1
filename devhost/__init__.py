"""dicomflow's local runtime: Azurite, an Event Grid-compatible event fabric, and a
host that runs ``function_app.app`` where Azure Functions Core Tools is not installed.

Run as ``python -m devhost <command>``.
"""
