"""How ``predict`` and ``evaluate`` score with a trained model, one scorer per trainer kind.

A gradient-trained method scores through its adapter stack (:mod:`fedgray.use.predict`'s
functions and :func:`fedgray.tasks.evaluate`, the run's own evaluation). CraFT, trained by
forward queries only, scores as it was trained and evaluated: the backbone's class logits
with the learnt context prompt written before every class prompt, through the refinement
MLP (``accuracy``), and without it (``prompt_accuracy``). Each scorer does exactly the
operations of its run's final evaluation, so both kinds give the run's own figures on the
run's own data. A new trainer kind adds its scorer to :data:`SCORERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from fedgray.adapters import AdaptedCLIP
from fedgray.adapters.prompt import PromptSpace
from fedgray.backbone import Backbone
from fedgray.blackbox.craft import encode_images
from fedgray.blackbox.federated import MEAN, REFINER, craft_model
from fedgray.blackbox.refine import PredictionRefiner
from fedgray.config import Config
from fedgray.data.sets import UNLABELLED
from fedgray.tasks import TaskData, evaluate
from fedgray.tasks.losses import class_logits
from fedgray.train.gradient import adapted_model
from fedgray.use.predict import class_scores, image_features, text_features

State = dict[str, torch.Tensor]


class Scorer(Protocol):
    """A trained model as ``predict`` and ``evaluate`` use it."""

    def image_features(self, pixels: torch.Tensor, *, progress: bool = False) -> torch.Tensor:
        """Image features of ``pixels`` (the backbone's device)."""
        ...

    def class_scores(self, images: torch.Tensor, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        """Class logits [N, classes] of image features; ``prompts[c]``: class c's."""
        ...

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Text features of ``texts``, to rank images by caption."""
        ...

    def metrics(self, data: TaskData) -> dict[str, float]:
        """The figures the run's final evaluation reports, on ``data`` (percent)."""
        ...


@dataclass(frozen=True)
class AdapterScorer:
    """A gradient-trained adapter stack."""

    model: AdaptedCLIP
    backbone: Backbone

    def image_features(self, pixels: torch.Tensor, *, progress: bool = False) -> torch.Tensor:
        return image_features(self.model, pixels, progress=progress)

    def class_scores(self, images: torch.Tensor, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        return class_scores(self.model, self.backbone, images, prompts)

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        return text_features(self.model, self.backbone, texts)

    def metrics(self, data: TaskData) -> dict[str, float]:
        return evaluate(self.model, data)


@dataclass(frozen=True)
class CraftScorer:
    """CraFT's prompt (at its learnt point) and refinement MLP, as :mod:`fedgray.blackbox`
    scores them: unbatched class prompts, images in chunks of 256, the backbone's own logit
    scale, the refiner on the raw logits."""

    model: AdaptedCLIP
    refiner: PredictionRefiner
    classes: int  # the classes the refiner was trained on
    backbone: Backbone

    def image_features(self, pixels: torch.Tensor, *, progress: bool = False) -> torch.Tensor:
        return image_features(self.model, pixels, progress=progress)

    def _raw(
        self, images: torch.Tensor, tokens: torch.Tensor, classes: torch.Tensor, count: int
    ) -> torch.Tensor:
        with torch.no_grad():
            texts = self.model.encode_texts(tokens)
        scale = self.backbone.interface.logit_scale
        return class_logits(images, texts, classes, num_classes=count, scale=scale)

    def _refined(self, raw: torch.Tensor) -> torch.Tensor:
        self.refiner.eval()
        with torch.no_grad():
            refined: torch.Tensor = self.refiner(raw)
        return refined

    def class_scores(self, images: torch.Tensor, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        if len(prompts) != self.classes:
            raise ValueError(
                f"--classes: {len(prompts)} class names; this CraFT model's refinement MLP "
                f"scores the {self.classes} classes it was trained on, in their order"
            )
        pairs = [(p, c) for c, group in enumerate(prompts) for p in group]
        tokens = self.backbone.tokenize([p for p, _ in pairs]).to(self.backbone.device)
        classes = torch.tensor([c for _, c in pairs], device=images.device)
        return self._refined(self._raw(images, tokens, classes, len(prompts)))

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        raise ValueError(
            "--captions: a CraFT model classifies only (its refinement MLP scores classes); "
            "give class names or none"
        )

    def metrics(self, data: TaskData) -> dict[str, float]:
        if bool((data.labels == UNLABELLED).any()):
            raise ValueError("data: a CraFT model is evaluated on labelled images only")
        images = encode_images(self.model, data.images)
        raw = self._raw(images, data.prompt_tokens, data.prompt_classes, data.num_classes)
        refined, labels = self._refined(raw), data.labels
        return {
            "accuracy": 100.0 * (refined.argmax(1) == labels).float().mean().item(),
            "prompt_accuracy": 100.0 * (raw.argmax(1) == labels).float().mean().item(),
        }


def _adapter_scorer(config: Config, backbone: Backbone, state: State, _kind: str) -> Scorer:
    """The adapter stack of ``config.method`` (the whole config, as :data:`SCORERS` gives
    every scorer: CraFT's also reads ``federation.seed``)."""
    return AdapterScorer(adapted_model(config.method, backbone, state), backbone)


def _craft_scorer(config: Config, backbone: Backbone, state: State, kind: str) -> Scorer:
    """A federated run shares the search mean (the prompt space drawn from
    ``federation.seed``, as every site drew it); ``fedgray adapt`` saves the prompt space
    itself, its projection and point included."""
    refiner_state = {k.removeprefix(REFINER): v for k, v in state.items() if k.startswith(REFINER)}
    classes, hidden = refiner_state["net.2.weight"].shape
    refiner = PredictionRefiner(classes, hidden=hidden)
    refiner.load_state_dict(refiner_state)
    if kind == "federated":
        model = craft_model(config, backbone)
        assert isinstance(model.text_in, PromptSpace)
        model.text_in.move_to(state[MEAN])
    else:
        prompt = {k: v for k, v in state.items() if not k.startswith(REFINER)}
        model = adapted_model(config.method, backbone, prompt)
    return CraftScorer(model, refiner, classes, backbone)


SCORERS: dict[str, Callable[[Config, Backbone, State, str], Scorer]] = {
    "gradient": _adapter_scorer,
    "craft": _craft_scorer,
}
"""Trainer kind -> the scorer of ``(config, backbone, adapters, run kind)``."""
