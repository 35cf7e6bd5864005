"""GANimation: anatomically-aware facial animation from a single image (Pumarola et al., ECCV 2018).

The public API, importable from the package root::

    from ganimation import GANimation, expression_aus
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ganimation.aus import AU_NAMES, EXPRESSIONS, expression_aus
    from ganimation.config import Config
    from ganimation.inference import AnimationResult, GANimation

_EXPORTS = {
    "GANimation": "ganimation.inference", "AnimationResult": "ganimation.inference",
    "Config": "ganimation.config", "AU_NAMES": "ganimation.aus", "EXPRESSIONS": "ganimation.aus",
    "expression_aus": "ganimation.aus",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    # Lazy, so `ganimation --help` and light imports do not pay for torch.
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ganimation' has no attribute {name!r}")
