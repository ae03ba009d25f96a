"""Write reference models to files in each framework's usual form (cached: built once per directory)."""

from __future__ import annotations

from pathlib import Path


def save_torch_export(model, path: Path, input_shape: tuple[int, ...] = (1, 3, 224, 224), dynamic_batch: bool = True) -> Path:
    """torch.export a module (batch dimension dynamic when asked) and save the .pt2 archive."""
    import torch

    dynamic = None
    if dynamic_batch:  # an example batch of 1 would let export specialise the batch to a constant
        input_shape = (2, *input_shape[1:])
        dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    example = (torch.randn(*input_shape),)
    program = torch.export.export(model.eval(), example, dynamic_shapes=dynamic)
    torch.export.save(program, str(path))
    return path


def mobilenet_v2_files(directory: Path) -> dict[str, Path]:
    """The real MobileNetV2 as a Keras file and a torch.export archive, built once into `directory`."""
    from .mobilenet_v2 import keras_mobilenet_v2, torch_mobilenet_v2

    directory.mkdir(parents=True, exist_ok=True)
    paths = {"keras": directory / "mobilenet_v2.keras", "pt2": directory / "mobilenet_v2.pt2"}
    if all(p.exists() for p in paths.values()):
        return paths
    torch_model = torch_mobilenet_v2()
    if not paths["pt2"].exists():
        save_torch_export(torch_model, paths["pt2"])
    if not paths["keras"].exists():
        keras_mobilenet_v2(torch_model).save(paths["keras"])
    return paths
