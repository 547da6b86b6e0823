"""Models: importing this package registers every backbone, neck, head, loss and detector."""
from . import layers  # noqa: F401  (first: the others build their blocks from it)
from . import weight_init  # noqa: F401  (registers detkit's 'Pretrained' initializer)
from . import backbones, data_preprocessors, detectors, heads, losses, necks, task_utils  # noqa: F401
