"""Building blocks shared by backbones, necks and heads: norms, activations, ConvModule, and
the folding of fixed batch norms into convolutions."""
from detkit.models.layers.activation import ACTIVATION_LAYERS, build_activation_layer
from detkit.models.layers.conv_module import ConvModule
from detkit.models.layers.fuse import conv_norm, fuse_conv_bn, sequential_conv_norm
from detkit.models.layers.inplace import add_into
from detkit.models.layers.norm import NORM_LAYERS, FrozenBatchNorm2d, build_norm_layer

__all__ = ['ACTIVATION_LAYERS', 'NORM_LAYERS', 'ConvModule', 'FrozenBatchNorm2d', 'add_into',
           'build_activation_layer', 'build_norm_layer', 'conv_norm', 'fuse_conv_bn',
           'sequential_conv_norm']
