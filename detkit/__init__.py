"""detkit: a registry-driven object-detection toolbox (backbone -> neck -> head) on mmengine."""
from .engine.safe_checkpoint import enable_safe_resume
from .version import __version__

# Checkpoints written and resumed through detkit stay loadable with torch.load(weights_only=True).
enable_safe_resume()

__all__ = ['__version__']
