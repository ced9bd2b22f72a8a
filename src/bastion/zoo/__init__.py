"""Reference architectures and a short training helper, so demos, tests and examples have real models."""

from bastion.zoo.models import MLP, ResNet18, SmallCNN, build
from bastion.zoo.train import accuracy, train

__all__ = ["MLP", "ResNet18", "SmallCNN", "accuracy", "build", "train"]
