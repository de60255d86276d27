"""The engine: runs queued jobs to the end. `core.py` is the dispatcher (shard leases, jobs,
shutdown), `lane.py` drives one shard, `sender.py` sends one batch and classifies what came
back, `recorder.py` writes outcomes in batched transactions."""

from ..metrics import EngineSnapshot, LimiterFigures
from .core import Engine, LeaseHolders
from .recorder import Recorder
from .sender import OPERATIONS, EngineStats

__all__ = ["OPERATIONS", "Engine", "EngineSnapshot", "EngineStats", "LeaseHolders",
           "LimiterFigures", "Recorder"]
