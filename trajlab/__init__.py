"""trajlab: run, score, search over, train on and evaluate tool-integrated reasoning trajectories."""

from trajlab.types import Example, RewardBreakdown, Segment, ToolCall, Trajectory

__version__ = "0.1.0"
__all__ = ["Example", "RewardBreakdown", "Segment", "ToolCall", "Trajectory", "__version__"]
