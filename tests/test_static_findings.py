"""A reshape used where a transpose belongs is a TSS finding, whichever side of it the layout ops sit on."""

from __future__ import annotations

from types import SimpleNamespace

from safeconvert.localize.static import _reinterpreting_chain

NCHW, NHWC = (1, 160, 7, 7), (1, 7, 7, 160)


def layer(index: int, kind: str, inputs: tuple[int, ...], in_shape, out_shape, role: str = "compute"):
    return SimpleNamespace(index=index, kind=kind, inputs=inputs, in_shape=in_shape, out_shape=out_shape, role=role)


def test_layout_ops_after_the_reshape():
    """ONNX as the fault is written: Reshape(NCHW -> NHWC order) then Transpose back."""
    layers = [layer(0, "conv2d", (-1,), NCHW, NCHW), layer(1, "reshape", (0,), NCHW, NHWC),
              layer(2, "transpose", (1,), NHWC, NCHW, "layout"), layer(3, "conv2d", (2,), NCHW, NCHW)]
    assert [l.index for l in _reinterpreting_chain(layers[1], layers)] == [1, 2]


def test_layout_ops_before_the_reshape():
    """An NHWC model in the NCHW form: the fault's TRANSPOSE cancelled, normalisation's own stays before it."""
    layers = [layer(0, "conv2d", (-1,), NCHW, NCHW), layer(1, "transpose", (0,), NCHW, NHWC, "layout"),
              layer(2, "reshape", (1,), NHWC, NCHW), layer(3, "conv2d", (2,), NCHW, NCHW)]
    assert [l.index for l in _reinterpreting_chain(layers[2], layers)] == [2, 1]


def test_a_reshape_that_changes_the_shape_for_good_is_not_a_reinterpretation():
    """Flatten before a dense layer: nothing brings the shape back."""
    layers = [layer(0, "conv2d", (-1,), NCHW, NCHW), layer(1, "reshape", (0,), NCHW, (1, 7840)),
              layer(2, "dense", (1,), (1, 7840), (1, 10))]
    assert _reinterpreting_chain(layers[1], layers) == []


def test_a_compute_op_between_breaks_the_chain():
    layers = [layer(0, "conv2d", (-1,), NCHW, NCHW), layer(1, "reshape", (0,), NCHW, NHWC),
              layer(2, "relu", (1,), NHWC, NHWC), layer(3, "transpose", (2,), NHWC, NCHW, "layout")]
    assert _reinterpreting_chain(layers[1], layers) == []
