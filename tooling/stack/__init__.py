"""The local stack: every server the pipeline needs, on 127.0.0.1, started by the project itself.

``LocalStack(settings).up(services=...)`` / ``.down()`` / ``.status()`` / ``.restart(component)``;
``fiscalflow stack ...`` is the same API on the command line.
"""

from tooling.stack.component import ComponentError
from tooling.stack.stack import ComponentStatus, LocalStack, ReplicaStatus, StackStatus

__all__ = ["ComponentError", "ComponentStatus", "LocalStack", "ReplicaStatus", "StackStatus"]
