"""detkit: a registry-driven object-detection toolbox (backbone -> neck -> head) on mmengine."""
from .torch_pair import check_installed_torch_pair

# A torchvision built for another torch fails deep inside torchvision, or later in nms: stop
# here instead, naming both versions and the fix (detkit/torch_pair.py).
check_installed_torch_pair()

from .engine.safe_checkpoint import enable_safe_resume  # noqa: E402
from .version import __version__  # noqa: E402

# Checkpoints written and resumed through detkit stay loadable with torch.load(weights_only=True).
enable_safe_resume()

__all__ = ['__version__']
