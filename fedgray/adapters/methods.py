"""What a site trains, by name: a small registry of builders over a sealed backbone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from fedgray.adapters.model import AdaptedCLIP
from fedgray.adapters.modules import (
    DeepPrompts,
    ImageInputAdapter,
    LgaConfig,
    LowRankOutputAdapter,
    LowRankOutputConfig,
    OutputAdapter,
    ScaleShiftAdapter,
    TextInputAdapter,
    WhitenedOutputAdapter,
)
from fedgray.adapters.prompt import CraftConfig, PromptSpace, context_tokens
from fedgray.adapters.white import LastLayersConfig, LoraConfig, attach_lora, last_blocks
from fedgray.adapters.whitening import public_statistics
from fedgray.backbone import Backbone
from fedgray.backbone.access import AccessLevel, SealedError
from fedgray.config import MethodConfig, MethodSection


@dataclass(frozen=True)
class Method:
    """A trainable configuration around the backbone and the access it needs.

    ``trainer`` names how ``fedgray adapt`` trains it: ``gradient`` (backpropagation into
    the trainable modules) or a derivative-free trainer such as ``craft``; ``tasks`` are
    the training tasks it supports; ``options``: the dataclass of its own config section
    (``method.<its SECTION>``), kept beside the modules that read it, so that a new method
    is its module and its row here.
    """

    name: str
    level: AccessLevel
    description: str
    build: Callable[[Backbone, MethodConfig], AdaptedCLIP]
    trainer: str = "gradient"
    tasks: tuple[str, ...] = ("retrieval", "classification")
    options: type[MethodSection] | None = None


def _zero_shot(backbone: Backbone, _: MethodConfig) -> AdaptedCLIP:
    return AdaptedCLIP(backbone)


def _output(backbone: Backbone, _: MethodConfig) -> AdaptedCLIP:
    dim = backbone.interface.embed_dim
    return AdaptedCLIP(backbone, image_out=OutputAdapter(dim), text_out=OutputAdapter(dim))


def _output_scale(backbone: Backbone, _: MethodConfig) -> AdaptedCLIP:
    dim = backbone.interface.embed_dim
    return AdaptedCLIP(backbone, image_out=ScaleShiftAdapter(dim), text_out=ScaleShiftAdapter(dim))


def _output_lowrank(backbone: Backbone, options: MethodConfig) -> AdaptedCLIP:
    dim, rank = backbone.interface.embed_dim, options.section(LowRankOutputConfig).rank
    return AdaptedCLIP(
        backbone,
        image_out=LowRankOutputAdapter(dim, rank),
        text_out=LowRankOutputAdapter(dim, rank),
    )


def _dga(backbone: Backbone, _: MethodConfig) -> AdaptedCLIP:
    i = backbone.interface
    return AdaptedCLIP(
        backbone,
        image_in=ImageInputAdapter(),
        text_in=TextInputAdapter(i.token_width),
        image_out=OutputAdapter(i.embed_dim),
        text_out=OutputAdapter(i.embed_dim),
    )


def _lga(backbone: Backbone, options: MethodConfig) -> AdaptedCLIP:
    model = _dga(backbone, options)
    # Towers without transformer blocks (ResNet, convnext) publish no entry point: DGA there.
    count = options.section(LgaConfig).prompt_tokens
    prompts = {
        p.tower: DeepPrompts(layers=p.layers, width=p.width, count=count)
        for p in backbone.interface.entry_points
    }
    if not prompts:
        raise SealedError(f"method 'lga': '{backbone.interface.name}' publishes no entry points")
    model.image_prompts, model.text_prompts = prompts.get("image"), prompts.get("text")
    return model


def _craft(backbone: Backbone, options: MethodConfig) -> AdaptedCLIP:
    craft = options.section(CraftConfig)
    context = context_tokens(backbone.tokenize, craft.context)
    width = backbone.interface.token_width
    space = PromptSpace(width, context, dim=craft.intrinsic_dim, projection=craft.projection)
    return AdaptedCLIP(backbone, text_in=space)


def _lora(backbone: Backbone, options: MethodConfig) -> AdaptedCLIP:
    lora = options.section(LoraConfig)
    factors = attach_lora(
        backbone.module, rank=lora.rank, alpha=lora.alpha, train_down=lora.train_a
    )
    return AdaptedCLIP(backbone, white_module=factors)


def _last_layers(backbone: Backbone, options: MethodConfig) -> AdaptedCLIP:
    return AdaptedCLIP(
        backbone,
        white_module=last_blocks(backbone.module, options.section(LastLayersConfig).blocks),
    )


def _full(backbone: Backbone, _: MethodConfig) -> AdaptedCLIP:
    return AdaptedCLIP(backbone, white_module=backbone.module.requires_grad_(True))


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("zero-shot", AccessLevel.BLACK, "the bare backbone, nothing trained", _zero_shot),
        Method(
            "craft",
            AccessLevel.BLACK,
            "CraFT: CMA-ES text prompt + refinement MLP, forward queries only",
            _craft,
            trainer="craft",
            tasks=("classification",),
            options=CraftConfig,
        ),
        Method("output", AccessLevel.GRAY, "output adapters only", _output),
        Method(
            "output-scale",
            AccessLevel.GRAY,
            "per-dimension scale and shift on the outputs (fewest dimensions, for DP)",
            _output_scale,
        ),
        Method(
            "output-lowrank",
            AccessLevel.GRAY,
            "rank-method.output_lowrank.rank residual output adapters (for DP)",
            _output_lowrank,
            options=LowRankOutputConfig,
        ),
        Method("dga", AccessLevel.GRAY, "DGA: input + output adapters (gray-box)", _dga),
        Method(
            "lga",
            AccessLevel.GRAY_PLUS,
            "LGA: DGA + per-layer tokens (gray+)",
            _lga,
            options=LgaConfig,
        ),
        Method(
            "linear-probe",
            AccessLevel.WHITE,
            "linear maps on both towers' frozen embeddings (white-box baseline)",
            _output,
        ),
        Method(
            "lora",
            AccessLevel.WHITE,
            "LoRA on every linear map of both towers",
            _lora,
            options=LoraConfig,
        ),
        Method(
            "last-layers",
            AccessLevel.WHITE,
            "fine-tune the last method.last_layers.blocks blocks of each tower",
            _last_layers,
            options=LastLayersConfig,
        ),
        Method("full", AccessLevel.WHITE, "full fine-tuning (white-box baseline)", _full),
    )
}


def method_sections() -> dict[str, type[MethodSection]]:
    """Section name -> the options dataclass a method's row declares (``method.<name>.*``),
    read from :data:`METHODS` as it stands."""
    return {m.options.SECTION: m.options for m in METHODS.values() if m.options is not None}


def method_spec(name: str) -> Method:
    """The registered method ``name``; a one-line error names the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}' (known: {', '.join(METHODS)})")
    return METHODS[name]


def build_model(
    backbone: Backbone,
    method: str | MethodConfig,
    *,
    prompt_tokens: int | None = None,
) -> AdaptedCLIP:
    """Build a method's trainable model around ``backbone``, checking its access level.

    ``method`` is the config's method section, or a name (its options at their defaults,
    ``prompt_tokens`` overriding LGA's). The model's tensors live on the backbone's device.
    """
    options = method if isinstance(method, MethodConfig) else MethodConfig(name=method)
    if prompt_tokens is not None:
        lga = replace(options.section(LgaConfig), prompt_tokens=prompt_tokens)
        options = replace(options, options={**options.options, LgaConfig.SECTION: lga})
    spec = method_spec(options.name)
    if backbone.level.rank < spec.level.rank:
        raise SealedError(
            f"method '{spec.name}' needs access level '{spec.level.value}', "
            f"the backbone is sealed at '{backbone.level.value}'"
        )
    model = spec.build(backbone, options)
    if options.whiten is not None:
        model.image_out = _whitened(model, spec.name, options.whiten, options.text_subspace)
    elif options.text_subspace is not None:
        raise ValueError(
            "method.text_subspace: needs method.whiten (the public dataset whose captions "
            "give the subspace)"
        )
    return model.to(backbone.device)


def _whitened(
    model: AdaptedCLIP, name: str, dataset: str, rank: int | None
) -> WhitenedOutputAdapter:
    """``model``'s image output adapter, whitened by public ``dataset``'s statistics and,
    with ``rank``, confined to that many leading caption directions."""
    if type(model.image_out) is not OutputAdapter:
        raise ValueError(
            f"method.whiten: method '{name}' has no linear image output adapter "
            "(output, dga, lga, linear-probe have one)"
        )
    whitening, directions = public_statistics(model.backbone, dataset)
    if rank is not None and rank > len(directions):
        raise ValueError(
            f"method.text_subspace: {rank} exceeds the embedding's {len(directions)} dimensions"
        )
    return WhitenedOutputAdapter(whitening, None if rank is None else directions[:, :rank])
