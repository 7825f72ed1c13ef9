"""grokscope core: tasks, model, training with hooks, run store.

    from interp import Run, TrainConfig, train
    run = train(TrainConfig(), "checkpoints/nanda")
    run = Run.open("checkpoints/nanda"); run.steps; run.metrics; run.model_at(run.steps[-1])
"""

from interp.bridge import to_bridge
from interp.errors import ConfigError, CorruptCheckpointError, StoreError
from interp.model import ModelConfig, Transformer
from interp.store import Run, grok_steps
from interp.tasks import OPERATIONS, Task
from interp.train import PRESETS, Hook, TrainConfig, checkpoint_steps, preset, resume, train

__all__ = [
    "OPERATIONS", "PRESETS", "ConfigError", "CorruptCheckpointError", "Hook", "ModelConfig", "Run",
    "StoreError", "Task", "TrainConfig", "Transformer", "checkpoint_steps", "grok_steps", "preset",
    "resume", "to_bridge", "train",
]
__version__ = "0.1.0"
