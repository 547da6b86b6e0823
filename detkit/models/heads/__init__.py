"""Detection heads."""
from .retina_head import DenseTestConfig, RetinaHead

__all__ = ['DenseTestConfig', 'RetinaHead']
