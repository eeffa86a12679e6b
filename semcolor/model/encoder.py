"""The ResNet34 encoder on one (L) input channel, returning features by resolution."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import resnet34


class ResNet34Encoder(nn.Module):
    """ResNet34 on one input channel; returns features by resolution.

    forward: (B, 1, H, W) -> [1/2: 64, 1/4: 64, 1/8: 128, 1/16: 256, 1/32: 512] channels.
    """

    out_channels = (64, 64, 128, 256, 512)

    def __init__(self) -> None:
        super().__init__()
        net = resnet34(weights=None)
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> list[Tensor]:
        f2 = self.stem(x)
        f4 = self.layer1(self.pool(f2))
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        f32 = self.layer4(f16)
        return [f2, f4, f8, f16, f32]
