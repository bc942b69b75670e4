"""Ready-made backbones with auxiliary heads."""

from keras_mwbp.models.resnet_cifar import resnet_cifar

__all__ = ["resnet_cifar"]
