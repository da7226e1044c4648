"""The reference backend: numpy, op by op. The oracle for every test."""

from .interpreter import ReferenceExecutable, evaluate
from .schedule_runner import ScheduledExecutable, run_schedule

__all__ = ["ReferenceExecutable", "ScheduledExecutable", "evaluate", "run_schedule"]
