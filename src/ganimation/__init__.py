"""GANimation: anatomically-aware facial animation from a single image (Pumarola et al., ECCV 2018)."""

__version__ = "0.1.0"
