"""Training-time pieces around mmengine's Runner: safe checkpoint loading and config checks."""
from .config_checks import check_config, check_data_paths
from .optim_wrappers import CPUAmpOptimWrapper
from .safe_checkpoint import enable_safe_resume, safe_checkpoint_globals

__all__ = ['CPUAmpOptimWrapper', 'check_config', 'check_data_paths', 'enable_safe_resume', 'safe_checkpoint_globals']
