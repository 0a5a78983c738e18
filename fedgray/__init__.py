"""fedgray: federated adaptation of sealed (gray-box) CLIP backbones."""

__version__ = "0.1.0"
