"""The real app's functions, built once per test process.

azure-functions 1.26 lets ``FunctionApp.get_functions()`` run only once per app: a
second call reports every function as a duplicate name. Every test that needs the
function list goes through :func:`app_functions`.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def app_functions() -> tuple[Any, ...]:
    import function_app

    return tuple(function_app.app.get_functions())
