"""grokscope core: tasks, model, training with hooks, run store.

    from interp import Run, TrainConfig, train
    run = train(TrainConfig(), "checkpoints/nanda")
    run = Run.open("checkpoints/nanda"); run.steps; run.metrics; run.model_at(run.steps[-1])

Module dependency order: each module imports only modules before it (never ``probes`` or
``apps``, and never this package ``interp`` itself)::

    errors → tasks, seqtasks → model (fastpath, readout, seqforward) → config → limits → numerics
    → losses → metrics → integrity, atomic, generations, locking → store → hooks → grokfast, optim
    → loop → train → batched → interventions → fork → sweep_backends → sweep → sweep_fork;  bridge, perf

* ``errors``: ConfigError, StoreError, CorruptCheckpointError.
* ``config``: TrainConfig, parse_field, PRESETS/preset, checkpoint_steps, lr_at.
* ``metrics``: GROK_THRESHOLD, METRIC_COLUMNS, grok_steps, final_values.
* ``numerics``, ``losses``: the training loss, whose gradient holds no subnormal float.
* ``atomic``, ``integrity``, ``generations``, ``locking``: checksummed atomic files, two generations of
  state and metrics, one writer per run.
* ``store``: Run (run directories, checkpoints, resume state).
* ``hooks``: TrainHook protocol, Hook base, the built-in hooks.
* ``grokfast``: the Grokfast gradient filters.
* ``loop``: what Trainer and BatchedTrainer share (state format, minibatch seeding, hook dispatch).
* ``train``: Trainer, train, resume, create_run. ``batched``: BatchedTrainer.
* ``optim``: optimizer choice, ⊥Grad, frozen groups. ``interventions`` and ``fork``: fork a run at
  any step (``interp.fork``), with interventions.
"""

from interp.bridge import to_bridge
from interp.config import PRESETS, TrainConfig, checkpoint_steps, preset
from interp.errors import ConfigError, CorruptCheckpointError, StoreError
from interp.fork import fork
from interp.hooks import Hook, TrainHook
from interp.metrics import GROK_THRESHOLD, grok_steps
from interp.model import ModelConfig, Transformer
from interp.store import Run
from interp.tasks import OPERATIONS, Task
from interp.train import resume, train

__all__ = [
    "GROK_THRESHOLD", "OPERATIONS", "PRESETS", "ConfigError", "CorruptCheckpointError", "Hook", "ModelConfig",
    "Run", "StoreError", "Task", "TrainConfig", "TrainHook", "Transformer", "checkpoint_steps", "fork", "grok_steps",
    "preset", "resume", "to_bridge", "train",
]
__version__ = "0.1.0"
