"""Training-time pieces around mmengine's Runner: crash-safe and exactly resumable checkpoints,
safe checkpoint loading, config checks, CPU mixed precision."""
from .checkpoint_hook import AtomicLocalBackend, CheckpointHook, atomic_write
from .config_checks import check_config, check_data_paths
from .distributed import CPUDistributedDataParallel, configure_launcher
from .optim_wrappers import CPUAmpOptimWrapper
from .rng_state_hook import RNGStateHook
from .safe_checkpoint import enable_safe_resume, safe_checkpoint_globals

__all__ = ['AtomicLocalBackend', 'CheckpointHook', 'CPUAmpOptimWrapper',
           'CPUDistributedDataParallel', 'RNGStateHook', 'atomic_write', 'check_config',
           'check_data_paths', 'configure_launcher', 'enable_safe_resume',
           'safe_checkpoint_globals']
