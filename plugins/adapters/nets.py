"""The networks of the learnt adapters: CycleGAN's ResNet generator and PatchGAN discriminator
(Zhu et al. 2017, as in their reference implementation) and a DnCNN-style residual denoiser
(Zhang et al. 2017)."""
from __future__ import annotations

import torch
from torch import nn


def init_weights(net: nn.Module, gain: float = 0.02, generator: torch.Generator | None = None) -> nn.Module:
    """N(0, 0.02) weights and zero biases, the reference implementation's 'normal' init, drawn from
    ``generator`` so that a fit does not depend on (or disturb) torch's global RNG."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain, generator=generator)
            nn.init.zeros_(m.bias)
    return net


def kaiming_init(net: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """He-normal convolutions (what DnCNN implementations use for their ReLU stack), unit norms, and a
    zero last convolution: a residual net then starts as the identity instead of adding noise of its own."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.zeros_(convs[-1].weight)
    return net


class ResnetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """c7s1-ngf, d(2ngf), d(4ngf), n x R(4ngf), u(2ngf), u(ngf), c7s1-out, tanh.

    Two stride-2 stages: inputs must be a multiple of 4 in height and width (``MULTIPLE``)."""

    MULTIPLE = 4

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=True),
                                   nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for i in range(2):
            mult = 2 ** i
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=True),
                       nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(n_blocks)]
        for i in range(2):
            mult = 2 ** (2 - i)
            layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                                          bias=True),
                       nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ResidualGenerator(nn.Module):
    """G(x) = clamp(x + r(x), -1, 1), r a ResNet generator without its tanh whose last convolution starts at zero
    (``zero_residual``): at iteration 0 G is exactly the identity, so every change it makes has to be earned
    against the discriminator instead of starting from a random translation."""

    MULTIPLE = ResnetGenerator.MULTIPLE

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, n_blocks: int = 9):
        super().__init__()
        if in_channels != out_channels:
            raise ValueError(f"a residual generator maps C to C channels, got {in_channels} -> {out_channels}")
        self.residual = ResnetGenerator(in_channels, out_channels, ngf, n_blocks).model[:-1]
        self.zero_residual()

    def zero_residual(self) -> "ResidualGenerator":
        """Zero the last convolution (after any weight init, which would redraw it)."""
        last = self.residual[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + self.residual(x), -1.0, 1.0)


def generator(profile: dict) -> nn.Module:
    """The generator a CycleGAN profile (or a fit's ``model.json`` profile) names: ``generator: resnet`` (the
    reference's) or ``residual``."""
    c = int(profile["channels"])
    cls = ResidualGenerator if profile.get("generator", "resnet") == "residual" else ResnetGenerator
    return cls(c, c, int(profile["ngf"]), int(profile["n_blocks"]))


class PatchDiscriminator(nn.Module):
    """PatchGAN; with n_layers = 3 each output unit sees a 70x70 input patch."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2 if n < n_layers else 1, padding=1, bias=True),
                       nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class DnCNN(nn.Module):
    """conv+ReLU, (depth-2) x (conv+norm+ReLU), conv: predicts the residual (degraded - clean)."""

    def __init__(self, channels: int = 1, depth: int = 17, width: int = 64, norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), _norm(norm, width), nn.ReLU(True)]
        layers += [nn.Conv2d(width, channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(width)
    return nn.GroupNorm(min(8, width), width)
