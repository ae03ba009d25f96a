"""Import ONNX, TFLite and torch.export models into Relax, with parameters as constants and origins kept.

Each frontend is wrapped at its per-node conversion step so that every binding can be traced back to the
node it came from (see naming.py). TVM 0.27 gaps are closed here, at the source, because they would
otherwise hide layers from every later comparison or stop the import:

- the ONNX frontend lowers Clip and constant-mode Pad to opaque `call_tir` kernels (via emit_te); we emit
  `relax.op.clip` / `relax.op.nn.pad` instead, so they are visible, layout-convertible ops;
- TFLite biases are 1-D constants added to NHWC tensors; ConvertLayout cannot carry a layout through a
  1-D operand, so every constant operand of an elementwise op is reshaped to the full rank first;
- a reshape whose new shape is computed in the graph (Keras Flatten: SHAPE/STRIDED_SLICE/PACK in TFLite,
  Shape/Gather/.../Concat in tf2onnx's ONNX) fails in both frontends; inputs are static here, so the
  shape is known (TFLite records it, ONNX shape inference propagates it) and used directly; ONNX nodes
  computed from constants alone are folded before import (onnx_prepare.py);
- torch.export archives usually have a dynamic batch: it is bound to 1 after import;
- quantised models are imported as float models carrying their quantised weights: see dequantise.py.

Keras/SavedModel models have no Relax frontend: see keras_reference.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInputError, one_line
from ..formats import Format, detect_format, guess_layout
from .naming import Origin, OriginRecorder, var_name

_ELEMENTWISE_BINARY = {
    "relax.add",
    "relax.subtract",
    "relax.multiply",
    "relax.divide",
    "relax.maximum",
    "relax.minimum",
    "relax.power",
}


@dataclass
class ImportedModel:
    """A model as imported into Relax, before normalisation.

    module: IRModule whose `main(input)` computes the model; weights are constants in it.
    origins: table of original nodes; binding var names `s<i>_...` point into it.
    input_shape/input_layout: the (static, batch 1) input `main` expects, in the model's own layout.
    quantisation: what was dequantised to import a quantised model (see dequantise.py), else None.
    """

    module: Any
    format: Format
    origins: list[Origin]
    input_name: str
    input_shape: tuple[int, ...]
    input_layout: str
    path: Path | None = None
    quantisation: str | None = None


def import_model(path: Path | str, fmt: Format | None = None, input_shape: tuple[int, ...] | None = None) -> ImportedModel:
    """Import any supported model file; Keras/SavedModel go through an unoptimised float TFLite export."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt is Format.ONNX:
        return import_onnx(path, input_shape=input_shape)
    if fmt is Format.TFLITE:
        return import_tflite(path)
    if fmt is Format.TORCH_EXPORT:
        return import_torch_export(path)
    if fmt in (Format.KERAS, Format.SAVEDMODEL):
        from .keras_reference import import_keras

        return import_keras(path, fmt=fmt)
    raise BadInputError(f"{path.name}: TVM has no frontend for {fmt.value} models; export it with torch.export (.pt2) or to ONNX")


# ---------------------------------------------------------------- ONNX


def import_onnx(model_or_path, input_shape: tuple[int, ...] | None = None) -> ImportedModel:
    """Import an ONNX model (path or ModelProto); a dynamic batch dimension is fixed to 1."""
    import onnx

    from .dequantise import describe, onnx_qdq_plan
    from .onnx_prepare import fold_constant_nodes, static_reshape_shapes

    path = None
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        model = onnx.load(str(path))
    else:
        model = model_or_path
    model = fold_constant_nodes(model)
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(graph_inputs) != 1:
        raise BadInputError(f"safeconvert handles single-input image models; this ONNX model has {len(graph_inputs)} inputs")
    first = graph_inputs[0]
    if input_shape is None:
        dims = []
        for position, dim in enumerate(first.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif position == 0:
                dims.append(1)
            else:
                raise BadInputError(f"input '{first.name}' has a dynamic dimension {position}: pass input_shape")
        input_shape = tuple(dims)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    recorder = OriginRecorder()
    reshapes = static_reshape_shapes(model, first.name, tuple(input_shape))
    passthrough, uses_qdq = onnx_qdq_plan(model)
    importer = _onnx_importer_class()(
        {first.name: list(input_shape)}, "float32", recorder=recorder, reshapes=reshapes, passthrough=passthrough
    )
    try:
        mod = importer.from_onnx(model.graph, opset)
    except Exception as exc:
        raise BadInputError(f"TVM cannot import this ONNX model ({one_line(exc)})") from exc
    mod = recorder.apply(mod, rewrite=broadcast_constant_operands)
    shape = tuple(input_shape)
    kinds = ({"QDQ weights"} | ({"QDQ activations"} if passthrough else set())) if uses_qdq else set()
    return ImportedModel(mod, Format.ONNX, recorder.origins, first.name, shape, guess_layout(shape), path, describe(kinds))


def _onnx_importer_class():
    """The TVM ONNX graph importer, wrapped per node (origins), with our conversions where TVM's fail."""
    import onnx
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as frontend

    from .dequantise import onnx_qdq_op

    class NamingOnnxImporter(frontend.ONNXGraphImporter):
        def __init__(self, shape_dict, dtype_dict, recorder: OriginRecorder, reshapes: dict[str, list[int]], passthrough: set[str]):
            super().__init__(shape_dict, dtype_dict, keep_params_in_input=False, sanitize=True)
            self._recorder = recorder
            self._reshapes = reshapes
            self._passthrough = passthrough
            self._current_node = None

        def _parse_value_proto(self, value_proto):
            # _construct_nodes calls this with each node right before converting it: remember which one.
            if isinstance(value_proto, onnx.NodeProto):
                self._current_node = value_proto
            return super()._parse_value_proto(value_proto)

        def _convert_operator(self, op_name, inputs, attrs, opset):
            node = self._current_node
            name = node.name if node is not None else attrs.get("tvm_custom", {}).get("name", "")
            outputs = tuple(node.output) if node is not None else ()
            index = self._recorder.begin(name, op_name, outputs)
            sym = self._replacement(op_name, inputs, attrs, opset, outputs)
            if sym is None:
                sym = super()._convert_operator(op_name, inputs, attrs, opset)
            if isinstance(sym, relax.Call):
                sym = self.bb.emit(sym, name_hint=var_name(index, self._recorder.origins[index].name))
            self._recorder.mark(sym, index)
            return sym

        def _replacement(self, op_name, inputs, attrs, opset, outputs):
            """Our conversion of a node where TVM's would hide or fail it, else None."""
            if op_name in ("Clip", "Pad"):
                return _visible_onnx_op(op_name, inputs, attrs, opset, [self._nodes, self._params])
            if op_name in ("QuantizeLinear", "DequantizeLinear"):
                return onnx_qdq_op(op_name, inputs, attrs, outputs, self._passthrough)
            if op_name == "Reshape" and outputs and not isinstance(inputs[1], tvm.ir.GenericConst):
                shape = self._reshapes.get(outputs[0])
                return relax.op.reshape(inputs[0], shape) if shape is not None else None
            return None

    return NamingOnnxImporter


def _visible_onnx_op(op_name: str, inputs, attrs: dict, opset: int, params):
    """relax.op.clip / relax.op.nn.pad for Clip and constant Pad, or None to use TVM's converter."""
    import math

    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as frontend

    def scalar(expr) -> float | None:
        if expr is None:
            return None
        if isinstance(expr, tvm.ir.GenericConst) and expr.value.numpy().size == 1:
            return float(expr.value.numpy().reshape(-1)[0])
        raise ValueError("not a constant")

    if op_name == "Clip":
        try:
            if opset < 11:
                low, high = attrs.get("min"), attrs.get("max")
            else:
                low, high = scalar(inputs[1]), scalar(inputs[2])
        except ValueError:
            return None
        low = -math.inf if low is None or math.isnan(low) else float(low)
        high = math.inf if high is None or math.isnan(high) else float(high)
        return relax.op.clip(inputs[0], relax.prim_value(low), relax.prim_value(high))
    if op_name == "Pad":
        mode = attrs.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        if mode != "constant":
            return None
        if opset < 11:
            pads = list(attrs.get("pads", ()))
            half = len(pads) // 2
            before, after, value = pads[:half], pads[half:], float(attrs.get("value", 0.0))
        else:
            try:
                before, after, value = frontend.Pad._parse_pads_and_axes(inputs, params)
            except (ValueError, tvm.error.TVMError):
                return None
        width = [int(v) for pair in zip(before, after) for v in pair]
        return relax.op.nn.pad(inputs[0], width, "constant", float(value))
    return None


# ---------------------------------------------------------------- TFLite


def import_tflite(path_or_bytes) -> ImportedModel:
    """Import a TFLite flatbuffer (path or bytes)."""
    import tflite
    from tvm.relax.frontend.tflite import from_tflite

    from .dequantise import describe

    path = None
    if isinstance(path_or_bytes, (str, Path)):
        path = Path(path_or_bytes)
        buffer = path.read_bytes()
    else:
        buffer = bytes(path_or_bytes)
    model = tflite.Model.GetRootAsModel(buffer, 0)
    recorder = OriginRecorder()
    dequantised: set[str] = set()
    try:
        mod = from_tflite(model, op_converter=_tflite_converter_class(recorder, dequantised))
    except Exception as exc:
        raise BadInputError(f"TVM cannot import this TFLite model ({one_line(exc)})") from exc
    mod = recorder.apply(mod, rewrite=broadcast_constant_operands)
    param = mod["main"].params[0]
    shape = tuple(int(d) for d in param.ty.shape)
    return ImportedModel(mod, Format.TFLITE, recorder.origins, param.name, shape, guess_layout(shape), path, describe(dequantised))


def _tflite_converter_class(recorder: OriginRecorder, dequantised: set[str]):
    """TVM's TFLite OperatorConverter with each op's result emitted under its output tensor's name,
    quantised tensors seen as float32 (dequantise.py) and computed reshape shapes made static."""
    from tvm import relax
    from tvm.relax.frontend.tflite import tflite_frontend as frontend

    from .dequantise import float_view

    class NamingOperatorConverter(frontend.OperatorConverter):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._float_views: dict[int, Any] = {}

        def get_tensors(self, tensors_idx_list):
            # The one place TVM reads tensors: present quantised/float16 ones as float32 (cached: the
            # converter asks for the same tensors many times).
            result = []
            for wrapper in super().get_tensors(tensors_idx_list):
                if wrapper.tensor_idx not in self._float_views:
                    self._float_views[wrapper.tensor_idx], kind = float_view(self, wrapper)
                    if kind:
                        dequantised.add(kind)
                result.append(self._float_views[wrapper.tensor_idx])
            return result

        def convert_quantize(self, op):
            return self.get_tensor_expr(self.get_input_tensors(op)[0])  # activations stay float32

        def convert_dequantize(self, op):
            return self.get_tensor_expr(self.get_input_tensors(op)[0])  # already a float32 constant or tensor

        def convert_op_to_relax(self):
            # Same loop as the base class, plus origin bookkeeping around each op.
            for op_idx in range(self.subgraph.OperatorsLength()):
                op = self.subgraph.Operators(op_idx)
                op_code_str = self.get_op_code_str(op)
                output_tensors = self.get_output_tensors(op)
                names = tuple(frontend.get_tensor_name(self.subgraph, t.tensor_idx) for t in output_tensors)
                index = recorder.begin(names[0] if names else "", op_code_str, names)
                ret = self.convert_map[op_code_str](op=op)
                if ret is None:
                    continue
                ret = self.bb.normalize(ret)
                if isinstance(ret, relax.Call):
                    ret = self.bb.emit(ret, name_hint=var_name(index, recorder.origins[index].name))
                recorder.mark(ret, index)
                if len(output_tensors) == 1:
                    self.exp_tab.set_expr(names[0], ret)
                else:
                    for position, name in enumerate(names):
                        self.exp_tab.set_expr(name, ret[position])

        def convert_reshape(self, op):
            # Keras Flatten computes its new shape at run time (SHAPE -> STRIDED_SLICE -> PACK); TVM
            # then passes a tensor where a ShapeExpr is needed. Our inputs are static, so the output
            # tensor's recorded shape is the answer (the shape ops become dead code).
            shape = _computed_reshape_target(self, op)
            if shape is None:
                return super().convert_reshape(op)
            data = self.get_tensor_expr(self.get_input_tensors(op)[0])
            return relax.op.reshape(data, relax.ShapeExpr(shape))

    return NamingOperatorConverter


def _computed_reshape_target(converter, op) -> list[int] | None:
    """The static output shape of a RESHAPE whose shape operand is computed (not a constant), else None."""
    import tvm

    inputs = converter.get_input_tensors(op)
    if len(inputs) != 2 or not converter.has_expr(inputs[1].tensor_idx):
        return None
    if isinstance(converter.get_expr(inputs[1].tensor_idx), tvm.ir.GenericConst):
        return None
    output = converter.get_output_tensors(op)[0].tensor
    shape = [int(d) for d in output.ShapeAsNumpy()] if output.ShapeLength() else []
    return shape if shape and all(d > 0 for d in shape) else None


# ---------------------------------------------------------------- torch.export


def import_torch_export(path_or_program) -> ImportedModel:
    """Import a torch.export archive (.pt2) or ExportedProgram; a dynamic batch dimension is fixed to 1."""
    import torch
    from tvm import relax
    from tvm.relax.frontend.torch import exported_program_translator as translator

    path = None
    if isinstance(path_or_program, (str, Path)):
        path = Path(path_or_program)
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise BadInputError(f"{path.name}: not a loadable torch.export archive ({one_line(exc)})") from None
    else:
        program = path_or_program
    program = program.run_decompositions()
    recorder = OriginRecorder()

    class NamingImporter(translator.ExportedProgramImporter):
        def __init__(self) -> None:
            super().__init__()
            self.convert_map = {key: self._named(fn) for key, fn in self.convert_map.items()}

        def _named(self, fn):
            def convert(node, *rest):
                stack = node.meta.get("nn_module_stack") or {}
                scope = list(stack.values())[-1][0] if stack else ""
                index = recorder.begin(node.name, getattr(node.target, "__name__", str(node.target)), (), scope)
                out = fn(node, *rest)
                if isinstance(out, relax.Call):
                    out = self.block_builder.emit(out, name_hint=var_name(index, node.name))
                if isinstance(out, (list, tuple)):
                    for item in out:
                        recorder.mark(item, index)
                else:
                    recorder.mark(out, index)
                return out

            return convert

    with torch.no_grad():
        mod = NamingImporter().from_exported_program(program, False, True, False, None)
    mod = _batch_of_one(recorder.apply(mod, rewrite=broadcast_constant_operands))
    param = mod["main"].params[0]
    try:
        shape = tuple(int(d) for d in param.ty.shape)
    except (TypeError, ValueError):
        raise BadInputError("the torch.export program has a dynamic input dimension other than the batch: export it with a fixed shape") from None
    return ImportedModel(mod, Format.TORCH_EXPORT, recorder.origins, param.name, shape, guess_layout(shape), path)


def _batch_of_one(mod):
    """`mod` with a symbolic batch dimension of its input bound to 1.

    Archives are usually exported with a dynamic batch (so they serve any batch size); layers are
    compared and run one image at a time, and normalisation needs static shapes. Binding the symbolic
    var after import keeps every binding — and so every origin name — exactly as imported.
    """
    import tvm
    from tvm import relax

    func = mod["main"]
    shape = getattr(func.params[0].ty, "shape", None)
    batch = shape[0] if shape is not None and len(shape) else None
    if not isinstance(batch, tvm.tirx.Var):
        return mod  # static, or an expression the static-shape check rejects
    mod["main"] = func.bind_symbolic_vars({batch: 1}).without_attr("tir_var_lower_bound").without_attr("tir_var_upper_bound")
    return relax.transform.Normalize()(mod)


# ---------------------------------------------------------------- fixups


def broadcast_constant_operands(ctx, old_var, value):
    """Reshape a lower-rank constant operand of an elementwise op to the other operand's full rank.

    TFLite adds 1-D biases (C,) to NHWC tensors; ConvertLayout cannot move a layout through such an
    operand and wraps the add in transposes instead. (1, 1, 1, C) is the same broadcast, made explicit.
    """
    import tvm
    from tvm import relax

    if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op) or value.op.name not in _ELEMENTWISE_BINARY:
        return None
    if len(value.args) != 2:
        return None
    args = list(value.args)
    changed = False
    for i, other in ((0, 1), (1, 0)):
        const = args[i]
        if not isinstance(const, tvm.ir.GenericConst):
            continue
        rank = _rank(args[other])
        data = const.value.numpy()
        if rank is None or data.ndim == 0 or data.ndim >= rank:
            continue
        args[i] = relax.const(data.reshape((1,) * (rank - data.ndim) + data.shape), str(data.dtype))
        changed = True
    return relax.Call(value.op, args, value.attrs, list(value.ty_args)) if changed else None


def _rank(expr) -> int | None:
    ty = getattr(expr, "ty", None)
    ndim = getattr(ty, "ndim", -1)
    return None if ndim is None or ndim < 0 else int(ndim)
