"""Small seeded CNNs for fast integration tests: real layers (conv, depthwise, BN, ReLU6, pooling, dense).

Weights and BatchNorm statistics are drawn from a seeded generator, so every build is identical and
the outputs have a spread that makes label changes meaningful.
"""

from __future__ import annotations

import numpy as np

INPUT_SIZE = 32
CLASSES = 10


def keras_small_cnn(seed: int = 0):
    """A functional Keras CNN on 32x32x3 input with 10 logits out."""
    from ..runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="input")
    x = layers.ZeroPadding2D(1, name="stem_pad")(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="valid", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(epsilon=1e-5, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(epsilon=1e-5, name="dw_bn")(x)
    x = layers.ReLU(name="dw_relu")(x)
    x = layers.Conv2D(24, 1, name="project")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(CLASSES, name="logits")(x)
    model = keras.Model(inputs, outputs, name="small_cnn")
    _randomise_batch_norm(model, np.random.default_rng(seed))
    return model


def keras_small_mobile_block(seed: int = 0):
    """A MobileNetV2-like stem and depthwise block whose channel count (8) differs from its spatial size (16).

    tf2onnx writes the depthwise BatchNorm as a Mul/Add on the convolution's output; onnx2tf then takes the
    per-channel constant for the wrong axis and fails, as on the real MobileNetV2 (with 16 channels on a 16x16
    map the two axes would match and hide that)."""
    layers, inputs, x = _keras_stem(8, seed)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = layers.BatchNormalization(epsilon=1e-3, name="dw_bn")(x)
    x = layers.ReLU(6.0, name="dw_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return _keras_model(inputs, layers.Dense(CLASSES, name="logits")(x), "small_mobile_block", seed)


def _keras_stem(channels: int, seed: int):
    """Keras seeded, the 32x32x3 input and a stride-2 Conv/BN/ReLU6 stem: the start two small CNNs share."""
    from ..runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="input")
    x = layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(epsilon=1e-3, name="stem_bn")(x)
    return layers, inputs, layers.ReLU(6.0, name="stem_relu6")(x)


def _keras_model(inputs, outputs, name: str, seed: int):
    import keras

    model = keras.Model(inputs, outputs, name=name)
    _randomise_batch_norm(model, np.random.default_rng(seed))
    return model


def _randomise_batch_norm(model, rng: np.random.Generator) -> None:
    """Give BatchNorm layers non-trivial statistics so that folding them matters."""
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            channels = layer.get_weights()[0].shape[0]
            layer.set_weights([
                rng.uniform(0.5, 1.5, channels).astype(np.float32),
                rng.normal(0, 0.1, channels).astype(np.float32),
                rng.normal(0, 0.1, channels).astype(np.float32),
                rng.uniform(0.5, 1.5, channels).astype(np.float32),
            ])


def torch_small_cnn(seed: int = 0):
    """A PyTorch CNN on 3x32x32 input with 10 logits out, in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU6(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 24, 1),
        nn.MaxPool2d(2),
        nn.Conv2d(24, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, CLASSES),
    )
    return _with_seeded_batch_norm(model, seed)


def keras_small_flatten_cnn(seed: int = 0):
    """A Keras CNN whose head flattens a 3x3x24 feature map into the Dense layer (32x32x3 in, 10 logits out).

    Flatten after a layout change is where converters read channels in the wrong order (NHWC vs NCHW),
    which a global-pooling head hides; the 'same' AveragePooling2D also gives a pool whose padding is
    excluded from the average.
    """
    layers, inputs, x = _keras_stem(16, seed)
    x = layers.AveragePooling2D(3, strides=1, padding="same", name="smooth")(x)
    x = layers.Conv2D(24, 3, strides=2, padding="valid", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    return _keras_model(inputs, layers.Dense(CLASSES, name="logits")(x), "small_flatten_cnn", seed)


def torch_small_pool_cnn(seed: int = 0):
    """A PyTorch CNN with pools on odd-sized maps (3x32x32 in, 10 logits out, eval mode).

    ceil_mode only matters when a pooling window does not tile its input, and count_include_pad only
    when a pool pads: the MaxPool2d sees 15x15 and the padded AvgPool2d 7x7, so both flags are live.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 24, 3, padding=1),
        nn.ReLU6(),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True),
        nn.Conv2d(24, 32, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, CLASSES),
    )
    return _with_seeded_batch_norm(model, seed)


def _with_seeded_batch_norm(model, seed: int):
    """Seeded non-trivial BatchNorm statistics (so folding them matters), model in eval mode."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model.eval()
