"""Models: importing this package registers every backbone, neck, head, loss and detector."""
from . import (  # noqa: F401
    backbones,
    data_preprocessors,
    detectors,
    heads,
    layers,  # noqa: F401  (first: the others build their blocks from it)
    losses,
    necks,
    task_utils,
    weight_init,  # noqa: F401  (registers detkit's 'Pretrained' initializer)
)
