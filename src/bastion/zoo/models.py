"""Small architectures defined here, because torchvision cannot be installed beside our torch."""

from __future__ import annotations

from torch import Tensor, nn

from bastion.errors import InputError


class MLP(nn.Module):
    """A multilayer perceptron over flattened inputs."""

    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (128, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; for 8x8 (digits) or 28x28 (MNIST-like) inputs."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 8, width: int = 32) -> None:
        super().__init__()
        if input_size < 4:
            raise InputError("input_size", input_size, "at least 4 pixels")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = input_size // 2
        if input_size >= 16:
            self.features.append(nn.Conv2d(2 * width, 2 * width, 3, padding=1))
            self.features.append(nn.ReLU())
            self.features.append(nn.MaxPool2d(2))
            side //= 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * side * side, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 (3x3 stem, no max-pool) for 32x32 inputs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


ARCHITECTURES = ("mlp", "smallcnn", "resnet18")


def build(arch: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build a zoo architecture by name for inputs of ``input_shape`` (without the batch dimension)."""
    name = arch.lower()
    if name == "mlp":
        n = 1
        for s in input_shape:
            n *= s
        return MLP(n, num_classes)
    if name == "smallcnn":
        if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
            raise InputError("input_shape", input_shape, "(channels, side, side) images for smallcnn")
        return SmallCNN(input_shape[0], num_classes, input_shape[1])
    if name == "resnet18":
        if len(input_shape) != 3:
            raise InputError("input_shape", input_shape, "(channels, height, width) images for resnet18")
        return ResNet18(num_classes, input_shape[0])
    raise InputError("arch", arch, f"one of {', '.join(ARCHITECTURES)} or module:Factory")
