"""ResNet101 and InceptionV3 with seeded weights and BatchNorm statistics measured on real photographs.

No ImageNet weights for these ship offline. Random weights with BatchNorm's default statistics (mean 0,
variance 1) make activations grow or vanish through a deep network until every logit is ~1e-6 and every
label a tie; so the moving statistics are set from one pass over the packaged photos instead (momentum 0
for that pass), which keeps each layer's activations normalised as in a trained network. The labels mean
nothing, but label agreement between a model and its conversion is meaningful.
"""

from __future__ import annotations

import numpy as np

ARCHITECTURES = {"resnet101": ("ResNet101", 224), "inception_v3": ("InceptionV3", 299)}


def keras_seeded_model(name: str, seed: int = 0, images: int = 16):
    """A keras.applications architecture (no download: weights=None), seeded, BN statistics from photos."""
    from ..runners.tf_runner import quiet_tensorflow

    quiet_tensorflow()
    import keras

    class_name, size = ARCHITECTURES[name]
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, class_name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    _set_batchnorm_statistics(model, _photos(size, images))
    return model


def _photos(size: int, count: int) -> np.ndarray:
    from ..validators.calibration import load_calibration
    from ..validators.preprocess import Preprocessing

    calib = load_calibration(None)
    return Preprocessing("tf", size, size).apply(calib.read(0, min(count, len(calib))))


def _set_batchnorm_statistics(model, batch: np.ndarray) -> None:
    """One training-mode pass with momentum 0: every BatchNorm's moving statistics become the photos' own."""
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(batch, training=True)
    for layer, momentum in zip(layers, saved):
        layer.momentum = momentum
