"""Run a normalised module with chosen intermediate values exposed, all in one VM call.

`main` is rebuilt to return (output, tap_1, ..., tap_n): the tapped bindings become dataflow outputs, so no
pass can fuse them away, and everything else compiles as usual. Extra outputs cost no measurable time,
so one executable exposing every layer is compiled once per module and reused for any subset of layers.
(VirtualMachine.set_instrument would also see intermediate values but only names fused kernels.)

TVM 0.27 CPU code is untuned (~0.2 s per MobileNetV2 image on 2 cores); run only a few images here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TapOutputs:
    """Outputs of one run: the model output and each tapped binding's value (batch stacked on axis 0)."""

    output: np.ndarray
    taps: dict[int, np.ndarray]
    seconds_per_image: float = 0.0


@dataclass
class TapRunner:
    """A module compiled once with `taps` (flat binding indices) exposed; runs numpy batches."""

    module: object
    taps: tuple[int, ...]
    target: str = "llvm"
    compile_seconds: float = 0.0
    init_seconds: float = 0.0
    _vm: object = field(default=None, repr=False)

    @classmethod
    def build(cls, module, taps: Sequence[int], target: str = "llvm") -> TapRunner:
        """Expose `taps`, compile and create the VM (the expensive part: seconds, once)."""
        import tvm
        from tvm import relax

        from .rebuild import rebuild

        taps = tuple(sorted({int(t) for t in taps}))
        exposed, _ = rebuild(module, expose=taps)
        exposed = relax.transform.Normalize()(exposed)
        start = time.perf_counter()
        executable = tvm.compile(exposed, target=target)
        compiled = time.perf_counter() - start
        start = time.perf_counter()
        vm = relax.VirtualMachine(executable, tvm.cpu())
        runner = cls(module=exposed, taps=taps, target=target, compile_seconds=compiled, init_seconds=time.perf_counter() - start)
        runner._vm = vm
        return runner

    def run(self, batch: np.ndarray, taps: Sequence[int] | None = None) -> TapOutputs:
        """Run image by image (imported modules have a fixed batch of 1); stack results per tap."""
        import tvm

        wanted = self.taps if taps is None else tuple(int(t) for t in taps)
        unknown = [t for t in wanted if t not in self.taps]
        if unknown:
            raise KeyError(f"bindings {unknown} were not exposed when this runner was built")
        position = {t: i + 1 for i, t in enumerate(self.taps)}
        param = self.module["main"].params[0]
        shape = tuple(int(d) for d in param.ty.shape)
        dtype = str(param.ty.dtype)
        per_image = shape[0]
        outputs: list[np.ndarray] = []
        collected: dict[int, list[np.ndarray]] = {t: [] for t in wanted}
        start = time.perf_counter()
        for begin in range(0, len(batch), per_image):
            chunk = np.ascontiguousarray(batch[begin : begin + per_image], dtype=dtype)
            if chunk.shape != shape:
                raise ValueError(f"the module takes input of shape {shape}, got a chunk of shape {chunk.shape}")
            result = self._vm["main"](tvm.runtime.tensor(chunk))
            outputs.append(_first_tensor(result[0]).numpy())
            for tap in wanted:
                collected[tap].append(result[position[tap]].numpy())
        elapsed = time.perf_counter() - start
        count = max(1, len(batch) // per_image)
        return TapOutputs(
            output=np.concatenate(outputs, axis=0),
            taps={t: np.concatenate(v, axis=0) for t, v in collected.items()},
            seconds_per_image=elapsed / count,
        )


def _first_tensor(value):
    """The model's first output: a model with several outputs returns them as a tuple (localization traces
    the first, as validation's `source_outputs` holds it)."""
    while not hasattr(value, "numpy") and len(value):
        value = value[0]
    return value
