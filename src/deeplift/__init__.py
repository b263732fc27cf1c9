"""deeplift: DeepLIFT (Rescale, RevealCancel, genomics default) and gradient-based attributions.

    import deeplift
    model = deeplift.convert(torch_module, example_inputs=x[:2])
    scores = deeplift.attribute(model, x, references=None, method="rescale", target=0)
"""

from .api import attribute
from .errors import (DeepLiftError, InputError, ModelFormatError, SummationToDeltaWarning,
                     UnsupportedLayerError)
from .graph import Model
from .plan import PerExampleTargets, SeveralTargets

__version__ = "1.0.0.dev0"


def convert(module, example_inputs, **kwargs) -> Model:
    """Capture a ``torch.nn.Module`` as a deeplift :class:`Model` (see ``deeplift.frontends.torch``)."""
    from .frontends.torch import convert_module
    return convert_module(module, example_inputs, **kwargs)


def load(path, **kwargs) -> Model:
    """Load a saved model: Keras 2 ``.h5`` or Keras 3 ``.keras`` (read without TensorFlow)."""
    from .frontends.keras import load_keras
    return load_keras(path, **kwargs)


_SUBMODULES = {"models", "conversion", "util", "backend", "dinuc_shuffle", "visualization", "blobs",
               "layers", "references", "genomics", "io", "viz", "methods", "engine", "examples", "cli",
               "plan", "arrays", "rules",
               "frontends", "legacy"}


def __getattr__(name: str):
    """``import deeplift`` then ``deeplift.util``/``deeplift.conversion``/... as the original
    library allowed, without importing them all up front."""
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'deeplift' has no attribute {name!r}")


__all__ = ["attribute", "convert", "load", "Model", "PerExampleTargets", "SeveralTargets", "DeepLiftError", "InputError",
           "ModelFormatError", "SummationToDeltaWarning", "UnsupportedLayerError", "__version__"]
