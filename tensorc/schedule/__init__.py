"""The scheduler: Graph (after passes) -> kernels in launch order + a buffer plan.

See docs/passes.md for the rules and how to read a report.
"""

from .kernel import Kernel
from .legality import Load
from .memory import ROLES, Buffer, MemoryPlan
from .scheduler import FusionRefusal, Schedule, schedule_graph
from .views import View

__all__ = ["ROLES", "Buffer", "FusionRefusal", "Kernel", "Load", "MemoryPlan", "Schedule", "View", "schedule_graph"]
