"""Training-time pieces around mmengine's Runner: crash-safe and exactly resumable checkpoints,
safe checkpoint loading, config checks, generated data sets, progress, CPU mixed precision."""
from .allocator import tune_cpu_allocator
from .amp import (
    AmpFallbackWarning,
    compile_inference_model,
    cpu_model_name,
    enable_amp,
    native_cpu_bf16,
    prepare_inference_model,
)
from .checkpoint_hook import (
    AtomicLocalBackend,
    CheckpointHook,
    atomic_write,
    check_output_file,
)
from .config_checks import (
    ConfigOptions,
    check_config,
    check_data_paths,
    load_config,
    missing_data_paths,
)
from .distributed import CPUDistributedDataParallel, close_process_group, configure_launcher
from .generated_data import GENERATORS, generate_data_set, prepare_generated_data
from .inference_hook import InferenceFastPathHook
from .optim_wrappers import CPUAmpOptimWrapper
from .progress import InferenceProgressHook, LoggerHook, ProgressBar
from .rng_state_hook import RNGStateHook
from .safe_checkpoint import enable_safe_resume, safe_checkpoint_globals
from .show_results import ShowResultsHook

__all__ = ['AmpFallbackWarning', 'AtomicLocalBackend', 'CheckpointHook', 'ConfigOptions',
           'CPUAmpOptimWrapper',
           'CPUDistributedDataParallel', 'GENERATORS', 'close_process_group',
           'compile_inference_model',
           'InferenceFastPathHook',
           'InferenceProgressHook', 'LoggerHook',
           'ProgressBar', 'RNGStateHook', 'atomic_write', 'check_config', 'check_data_paths',
           'check_output_file',
           'configure_launcher', 'cpu_model_name', 'enable_amp', 'enable_safe_resume',
           'generate_data_set', 'load_config', 'missing_data_paths', 'native_cpu_bf16',
           'prepare_generated_data', 'prepare_inference_model', 'safe_checkpoint_globals',
           'ShowResultsHook', 'tune_cpu_allocator']
