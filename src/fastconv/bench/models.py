"""The end-to-end benchmark's networks, written here in plain ``torch.nn`` (torchvision may not be
installed): a CIFAR-size ResNet-18, a CIFAR-size MobileNetV2 and LeNet-5, all on 32x32 images.

Each is built from ``torch.nn`` modules only, so ``fastconv.torch.patch`` swaps exactly what a user's
own copy of the model would get swapped: the convolutions, batch norms, pools and linear layers;
ReLU / ReLU6, the residual additions, flattening and the loss stay PyTorch's.

- ``resnet18``: torchvision's ``resnet18`` (BasicBlock, [2, 2, 2, 2], 64-512 channels, bias-free
  convs, in-place ReLU, a 1x1 conv + batch norm shortcut where the shape changes, Kaiming
  initialisation) adapted to 32x32 inputs the usual way: a 3x3 stride-1 stem and no max pool, so the
  four stages run at 32, 16, 8 and 4 pixels. 11.2 M parameters, 10 classes.
- ``mobilenetv2``: torchvision's ``mobilenet_v2`` (inverted residuals: 1x1 expansion, depthwise 3x3,
  1x1 projection, each with batch norm, ReLU6 after the first two; the same (t, c, n, s) table and
  1280-channel head) adapted to 32x32 inputs as for CIFAR: stride 1 in the stem and in the 24-channel
  stage, so the stages run at 32, 32, 16, 8, 8, 4, 4 pixels. The classifier's dropout is left out: it
  changes nothing the benchmark times and would need identical random masks to verify. 2.2 M
  parameters.
- ``lenet5``: LeNet-5 on 3x32x32 images (CIFAR-10's colour images, as in PyTorch's CIFAR-10
  tutorial) with today's choices: ReLU and 2x2 max pooling. conv 5x5 3->6, pool, conv 5x5 6->16,
  pool, linear 400->120->84->10. 62 k parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs with batch norm, a shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)  # CIFAR stem: 3x3, stride 1, no max pool
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        stages, in_channels = [], 64
        for channels, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels)))
            in_channels = channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (unless t = 1), depthwise 3x3, linear 1x1 projection; the
    input added back where stride and channels allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


#: torchvision's (expansion t, channels c, repeats n, first stride s), with CIFAR's stride 1 in the
#: 24-channel stage (ImageNet's is 2)
MOBILENETV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers = [nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)]
        in_channels = 32
        for t, c, n, s in MOBILENETV2_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(in_channels, c, s if i == 0 else 1, t))
                in_channels = c
        layers += [nn.Conv2d(in_channels, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(1280, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
                                        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: type
    input_shape: tuple[int, int, int]  # (C, H, W) of one image
    num_classes: int
    description: str


MODELS = {
    "resnet18": ModelSpec("resnet18", ResNet18, (3, 32, 32), 10,
                          "ResNet-18 (BasicBlock), CIFAR stem: 3x3 stride 1, no max pool"),
    "mobilenetv2": ModelSpec("mobilenetv2", MobileNetV2, (3, 32, 32), 10,
                             "MobileNetV2 (inverted residuals, depthwise 3x3, ReLU6), CIFAR strides"),
    "lenet5": ModelSpec("lenet5", LeNet5, (3, 32, 32), 10,
                        "LeNet-5 on 3x32x32, ReLU and 2x2 max pooling"),
}


def build(name: str, seed: int) -> nn.Module:
    """Model ``name`` with its parameters drawn from ``seed``: the same values in every process."""
    torch.manual_seed(seed)
    return MODELS[name].build(MODELS[name].num_classes)
