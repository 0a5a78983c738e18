"""Trainable modules around a sealed backbone."""

from fedgray.adapters.methods import METHODS, Method, build_model, method_spec
from fedgray.adapters.model import AdaptedCLIP

__all__ = ["METHODS", "AdaptedCLIP", "Method", "build_model", "method_spec"]
