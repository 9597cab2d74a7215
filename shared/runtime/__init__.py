"""The stage runtime: one way for every service to consume, produce, retry, dead-letter,
measure and shut down.  A service supplies a :class:`StageSpec` with a handler; the
:class:`StageRunner` owns everything else."""

from shared.runtime.errors import PermanentError, TransientError
from shared.runtime.message import Emit, Message
from shared.runtime.stage import StageSpec

__all__ = ["Emit", "Message", "PermanentError", "StageSpec", "TransientError"]
