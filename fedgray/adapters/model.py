"""A sealed backbone with trainable modules around it: the one model every trainer uses."""

from __future__ import annotations

import torch
from torch import nn

from fedgray.adapters.modules import DeepPrompts
from fedgray.backbone import Backbone
from fedgray.tasks.data import fit_pixels

INPUT_MODULES = ("image_in", "text_in")


class AdaptedCLIP(nn.Module):
    """``out(backbone(in(x)))`` for both towers; any module may be absent.

    The backbone is a plain attribute, not a submodule: ``parameters()`` and
    ``state_dict()`` hold only the trainable modules (plus the open_clip model itself
    for ``white``-level fine-tuning, passed as ``white_module``).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        image_in: nn.Module | None = None,
        text_in: nn.Module | None = None,
        image_out: nn.Module | None = None,
        text_out: nn.Module | None = None,
        image_prompts: DeepPrompts | None = None,
        text_prompts: DeepPrompts | None = None,
        white_module: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_in, self.text_in = image_in, text_in
        self.image_out, self.text_out = image_out, text_out
        self.image_prompts, self.text_prompts = image_prompts, text_prompts
        self.white_module = white_module

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image features [B, D] (not normalised) of images at any resolution: each batch
        is fitted to the backbone's input size before the image input module sees it."""
        pixels = fit_pixels(pixels, self.backbone.interface.image_size)
        x = self.image_in(pixels) if self.image_in is not None else pixels
        prompts, gates = self.image_prompts(x) if self.image_prompts is not None else (None, None)
        z = self.backbone.encode_image(x, prompts=prompts, gates=gates)
        return self.image_out(z) if self.image_out is not None else z

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features [B, D] (not normalised) of token ids from the backbone's tokenizer.

        A text input module may rewrite the ids (CraFT's writes its context words in)."""
        z = self.bare_texts(tokens)
        return self.text_out(z) if self.text_out is not None else z

    def bare_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features [B, D] before the text output module (what it sees)."""
        inputs = self.text_in(tokens)._asdict() if self.text_in is not None else {}
        tokens = inputs.pop("tokens", tokens)
        if self.text_prompts is not None:
            inputs["prompts"], inputs["gates"] = self.text_prompts(tokens)
        return self.backbone.encode_text(tokens, **inputs)

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Image and text features of paired inputs."""
        return self.encode_images(pixels), self.encode_texts(tokens)

    def trainable_count(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def trainable_fraction(self) -> float:
        """Trainable scalars as a fraction of the backbone's parameter count."""
        return self.trainable_count() / self.backbone.interface.parameter_count

    def param_groups(self, lr: float, *, input_lr_scale: float = 1.0) -> list[dict]:
        """Optimizer groups: input modules at ``lr * input_lr_scale``, the rest at ``lr``."""
        inputs = [
            p
            for n in INPUT_MODULES
            if getattr(self, n) is not None
            for p in getattr(self, n).parameters()
        ]
        ids = {id(p) for p in inputs}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": rest, "lr": lr}]
        if inputs:
            groups.append({"params": inputs, "lr": lr * input_lr_scale})
        return [g for g in groups if g["params"]]
