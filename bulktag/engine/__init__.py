"""The engine: runs queued jobs to the end. `dispatcher.py` hands out shards (shard leases, jobs,
shutdown), `lane.py` drives one shard, `sender.py` sends one batch and classifies what came
back, `recorder.py` writes outcomes in batched transactions; `discovery.py` walks GetResources
queries into a job; `metrics.py` is what the engine and the daemon expose to Prometheus."""

from bulktag.engine.dispatcher import Engine, LeaseHolders, settle_gc
from bulktag.engine.metrics import EngineSnapshot, LimiterFigures
from bulktag.engine.recorder import Recorder
from bulktag.engine.sender import OPERATIONS, EngineStats

__all__ = ["OPERATIONS", "Engine", "EngineSnapshot", "EngineStats", "LeaseHolders",
           "LimiterFigures", "Recorder", "settle_gc"]
