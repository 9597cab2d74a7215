"""The local stack: every server the pipeline needs, on 127.0.0.1, started by the project itself.

``LocalStack(settings).up(services=...)`` / ``.down()`` / ``.status()`` / ``.restart(component)``;
``fiscalflow stack ...`` is the same API on the command line.

The names below are imported on first use (PEP 562): ``fiscalflow`` imports ``tooling.stack.cli``
for its help, which must not pay for the stack's modules (pydantic settings, confluent-kafka,
cryptography, httpx).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tooling.stack.component import ComponentError
    from tooling.stack.stack import ComponentStatus, LocalStack, ReplicaStatus, StackStatus

__all__ = ["ComponentError", "ComponentStatus", "LocalStack", "ReplicaStatus", "StackStatus"]

_HOMES = {"ComponentError": "tooling.stack.component", "ComponentStatus": "tooling.stack.stack",
          "LocalStack": "tooling.stack.stack", "ReplicaStatus": "tooling.stack.stack",
          "StackStatus": "tooling.stack.stack"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
