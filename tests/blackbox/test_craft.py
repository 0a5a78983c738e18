"""CraFT's pieces: the prompt space, the refinement, CMA-ES through the sealed black box,
the query budget, and ``fedgray adapt`` with method ``craft``."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fedgray.adapt import adapt
from fedgray.adapters import build_model
from fedgray.adapters.prompt import PROJECTIONS, CraftConfig
from fedgray.backbone import SealedBackbone, load_sealed
from fedgray.blackbox.augment import augment
from fedgray.blackbox.craft import Craft, encode_images, plan_queries
from fedgray.blackbox.refine import PredictionRefiner, consistency
from fedgray.blackbox.search import CmaSearch
from fedgray.cli import main
from fedgray.config import MethodConfig
from fedgray.config_schema import ConfigError
from fedgray.data.registry import load_dataset
from fedgray.resolver import load_config
from fedgray.tasks.data import TaskData, prepare
from fedgray.tasks.metrics import evaluate, evaluation_calls
from tests.helpers import SHORT_CRAFT_ON_DIGITS, assert_close, close, reduction_terms, refused

CAPTIONS = ["a red circle", "the digit 7 in blue", "a small green star at the top left"]
# validation=0: the authors' last-generation run, whose query counts these tests pin.
SMALL = CraftConfig(queries=60, popsize=6, intrinsic_dim=8, hidden=16, sigma=0.1, validation=0)


def black(budget: int | None = None) -> SealedBackbone:
    torch.manual_seed(0)
    return load_sealed("fedgray-micro", None, level="black", query_budget=budget)


def digits(backbone: SealedBackbone, size: int = 40) -> TaskData:
    """Real digit scans with one prompt per class (queries stay cheap)."""
    data = load_dataset("digits", split="train", size=size, seed=0)
    task = prepare(data, backbone.tokenize)
    first = torch.ones_like(task.prompt_classes, dtype=torch.bool)
    first[1:] = task.prompt_classes[1:] != task.prompt_classes[:-1]
    return replace(task, prompt_tokens=task.prompt_tokens[first], prompt_classes=torch.arange(10))


def craft(backbone: SealedBackbone, train: TaskData, options: CraftConfig = SMALL) -> Craft:
    model = build_model(backbone, "craft")
    return Craft(model, train, options=options, scale=10.0, batch_size=16, lr=1e-3, seed=0)


def test_refinement_is_the_identity_at_init() -> None:
    logits = torch.randn(5, 10) * 7
    assert torch.equal(PredictionRefiner(10, hidden=32)(logits), logits)


def test_consistency_is_a_kl_divergence() -> None:
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    assert consistency(a, a).abs() < 1e-6
    expected = (F.softmax(b, -1) * (F.log_softmax(b, -1) - F.log_softmax(a, -1))).sum(-1).mean()
    assert_close(consistency(a, b), expected, terms=a.numel())


def test_prompt_at_zero_is_the_bare_black_box_on_the_context_words_exactly() -> None:
    backbone = black()
    model = build_model(backbone, "craft")
    tokens = backbone.tokenize(CAPTIONS)
    worded = backbone.tokenize([f"a photo of a {c}" for c in CAPTIONS])
    assert torch.equal(model.encode_texts(tokens), backbone.encode_text(worded))
    assert model.trainable_count() == 0  # z is searched, not trained
    model.text_in.move_to(torch.full((model.text_in.dim,), 0.5))
    assert not close(
        model.encode_texts(tokens), backbone.encode_text(worded), terms=reduction_terms(backbone)
    )


def test_the_prompt_is_the_context_words_embeddings_plus_a_z() -> None:
    """The tower's input at the context slots is E("a photo of a") + A z, read through a
    white-level twin of the same weights; the site's module holds no embedding."""
    torch.manual_seed(0)
    white = load_sealed("fedgray-micro", None, level="white")
    model = build_model(white, "craft")
    prompt, module = model.text_in, white.module
    ids = white.tokenize(["a photo of a"])[0, 1:5]
    assert prompt.tokens == 4 and torch.equal(prompt.context_ids, ids)
    assert all(
        t.numel() != module.token_embedding.weight.numel() for t in prompt.state_dict().values()
    )
    seen: list[torch.Tensor] = []
    hook = module.transformer.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    try:
        tokens = white.tokenize(CAPTIONS)
        for z in (torch.zeros(prompt.dim), torch.randn(prompt.dim)):
            prompt.move_to(z)
            model.encode_texts(tokens)
            slots = seen[-1][:, 1:5] - module.positional_embedding[1:5]
            expected = module.token_embedding(ids) + prompt.prompt()
            assert_close(slots, expected.expand_as(slots), terms=prompt.dim)
    finally:
        hook.remove()
    assert torch.equal(prompt.prompt(), (prompt.projection @ z).view(4, -1))


def test_a_prompt_too_long_for_its_context_words_is_refused_in_one_line() -> None:
    backbone = black()
    model = build_model(backbone, "craft")
    long = backbone.tokenize([" ".join(["red"] * 40)])
    with pytest.raises(ValueError, match="no room for 4 context tokens"):
        model.encode_texts(long)


def test_craft_at_zero_queries_scores_what_evaluate_scores() -> None:
    backbone = black()
    data = load_dataset("digits", split="test", size=200, seed=0)
    test = prepare(data, backbone.tokenize)
    assert test.prompt_tokens.shape[0] > test.num_classes  # several prompts per class
    model = build_model(backbone, "craft")
    run = Craft(
        model,
        test,
        options=SMALL,
        scale=backbone.interface.logit_scale,
        batch_size=16,
        lr=1e-3,
        seed=0,
    )
    run.observe()
    raw, refined = run.predict(encode_images(model, test.images))
    accuracy = evaluate(model, test)["accuracy"]
    for logits in (raw, refined):
        assert 100.0 * (logits.argmax(1) == test.labels).float().mean().item() == accuracy


def test_cma_es_improves_a_toy_objective_through_the_sealed_black_box() -> None:
    backbone = black(budget=1000)
    model = build_model(backbone, "craft")
    prompt, tokens = model.text_in, backbone.tokenize(CAPTIONS)
    prompt.move_to(torch.randn(prompt.dim) * 0.5)  # a reachable target
    target = model.encode_texts(tokens)

    def distance(z: torch.Tensor) -> float:
        prompt.move_to(z)
        features = model.encode_texts(tokens)
        assert not features.requires_grad  # forward queries only: outputs are detached
        return (1 - F.cosine_similarity(features, target)).mean().item()

    start = distance(torch.zeros(prompt.dim))
    search = CmaSearch(prompt.dim, sigma=0.3, popsize=10, seed=0)
    used = backbone.queries_used
    for _ in range(15):
        search.generation(distance)
    assert backbone.queries_used - used == 15 * 10
    assert distance(search.mean) < 0.3 * start


def test_the_search_is_deterministic_from_its_seed() -> None:
    def run() -> torch.Tensor:
        search = CmaSearch(4, sigma=0.5, popsize=6, seed=3)
        for _ in range(3):
            search.generation(lambda z: float((z - 1).square().sum()))
        return search.mean

    assert torch.equal(run(), run())


def test_craft_runs_from_a_given_search_distribution_and_returns_the_new_one() -> None:
    backbone = black()
    model = build_model(backbone, "craft")
    mean = torch.linspace(-0.5, 0.5, model.text_in.dim)
    run = Craft(
        model,
        digits(backbone),
        options=SMALL,
        scale=10.0,
        batch_size=16,
        lr=1e-3,
        seed=0,
        mean=mean,
        sigma=0.3,
    )
    assert torch.equal(run.prompt.point, mean) and run.distribution()[1] == pytest.approx(0.3)
    used = backbone.queries_used
    plan = run.run()
    after, sigma = run.distribution()
    assert backbone.queries_used - used == plan.total <= SMALL.queries
    assert not torch.equal(after, mean) and sigma > 0 and sigma != pytest.approx(0.3)


def test_query_plan_fits_the_budget_or_says_why_not() -> None:
    # 1 query for the features; per generation 40 candidates, the mean and (augmented) 1.
    plan = plan_queries(CraftConfig(queries=8000), train_size=160, remaining=None)
    assert (plan.features, plan.per_generation, plan.generations) == (1, 42, 190)
    assert plan.total <= 8000 < plan.total + plan.per_generation
    assert plan.paper_total == 40 * 190  # the paper counts the candidates only
    plain = plan_queries(CraftConfig(queries=8000, augment=False), train_size=300, remaining=None)
    assert (plain.features, plain.per_generation, plain.generations) == (2, 41, 195)
    with pytest.raises(ConfigError, match=r"queries: 8000 is more than .* has left \(500\)"):
        plan_queries(CraftConfig(queries=8000), train_size=160, remaining=500)
    with pytest.raises(ConfigError, match="queries: 30 buys no CMA-ES generation"):
        plan_queries(CraftConfig(queries=30), train_size=160, remaining=None)


def test_craft_stops_at_its_budget_and_refuses_to_exceed_the_backbone_budget() -> None:
    backbone = black(budget=100)
    train = digits(backbone)
    run = craft(backbone, train)
    seen = []
    plan = run.run(on_generation=seen.append)
    # 1 query for the features, then 8 per generation (6 candidates, the mean, the
    # augmented features): 7 generations in 60 queries; the paper counts 6 per generation.
    assert plan.generations == 7 and [g.queries for g in seen] == [1 + 8 * i for i in range(1, 8)]
    assert [g.paper_queries for g in seen] == [6 * i for i in range(1, 8)]
    assert backbone.queries_used == plan.total == 57 <= SMALL.queries
    raw, refined = run.predict(torch.randn(3, backbone.interface.embed_dim))
    assert raw.shape == refined.shape == (3, train.num_classes)
    with pytest.raises(ConfigError, match=r"more than the backbone's query budget has left \(43\)"):
        craft(backbone, train).run()
    assert backbone.queries_used == 57  # refused before any query


def test_cma_es_keeps_every_candidate_within_its_bounds() -> None:
    search = CmaSearch(6, sigma=1.0, popsize=10, seed=0, bound=0.1)
    seen: list[torch.Tensor] = []
    for _ in range(5):
        search.generation(lambda z: seen.append(z) or float((z - 3).square().sum()))
    assert len(seen) == 50 and all(z.abs().max() <= 0.1 + 1e-6 for z in seen)
    assert search.sample_mean().abs().max() <= 0.1 + 1e-6


def test_the_prompt_moves_to_the_mean_of_a_fresh_sample_each_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    samples: list[torch.Tensor] = []
    original = CmaSearch.sample_mean

    def spy(self: CmaSearch) -> torch.Tensor:
        samples.append(original(self))
        return samples[-1]

    monkeypatch.setattr(CmaSearch, "sample_mean", spy)
    backbone = black()
    run = craft(backbone, digits(backbone))
    points: list[tuple[torch.Tensor, torch.Tensor]] = []
    run.run(on_generation=lambda _: points.append((run.prompt.point.clone(), run.search.mean)))
    assert len(samples) == len(points) == 7
    for sample, (point, mean) in zip(samples, points, strict=True):
        assert torch.equal(point, sample) and not torch.equal(point, mean)


def test_the_refiner_loses_its_consistency_term_after_the_first_quarter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    weights: list[float] = []
    original = Craft._refine

    def spy(self: Craft, raw: torch.Tensor, *, weight: float) -> float:
        weights.append(weight)
        return original(self, raw, weight=weight)

    monkeypatch.setattr(Craft, "_refine", spy)
    backbone = black()
    options = replace(SMALL, queries=1 + 8 * 8, consistency=0.5)  # 8 generations
    craft(backbone, digits(backbone), options).run()
    assert weights == [0.5, 0.5] + [0.0] * 6


def test_augmentation_crops_and_flips_and_repeats_from_its_seed() -> None:
    ramp = torch.linspace(-1, 1, 32).expand(64, 3, 32, 32).clone()  # rising left to right
    out = augment(ramp, torch.Generator().manual_seed(0))
    again = augment(ramp, torch.Generator().manual_seed(0))
    assert out.shape == ramp.shape and torch.equal(out, again)
    rising = out[:, 0, 0, -1] > out[:, 0, 0, 0]
    assert 10 < int(rising.sum()) < 54  # flipped about half the time
    span = (out[:, 0, 0, :].amax(1) - out[:, 0, 0, :].amin(1)) / 2
    assert span.max() <= 1.0 and span.min() < 0.95  # some crops are narrower than the image
    constant = torch.full((4, 3, 32, 32), 0.3)
    assert_close(augment(constant, torch.Generator().manual_seed(1)), constant, terms=4)  # bilinear


@pytest.mark.slow  # a full CMA-ES search on digits: 20-35 s on 2 cores
def test_craft_never_returns_worse_than_its_start_on_the_held_out_split() -> None:
    """A search that can only hurt: the labels are the start's own predictions (the start
    scores 100% on them), the step size is huge and the refiner's rate absurd. The run
    returns the start, or something as accurate with a lower held-out loss."""
    backbone = black()
    data = digits(backbone, size=60)
    options = replace(SMALL, queries=120, sigma=50.0, bound=0.0, validation=0.25)
    probe = Craft(
        build_model(backbone, "craft"),
        data,
        options=SMALL,
        scale=10.0,
        batch_size=16,
        lr=1e-3,
        seed=0,
    )
    probe.observe()
    _, start = probe.predict(encode_images(probe.model, data.images))
    data = replace(data, labels=start.argmax(1))
    run = Craft(
        build_model(backbone, "craft"),
        data,
        options=options,
        scale=10.0,
        batch_size=16,
        lr=10.0,
        seed=0,
    )
    assert run.validation is not None and len(run.validation) == 15 and len(run.train) == 45
    held = encode_images(run.model, run.validation.images)
    labels = run.validation.labels

    def score() -> tuple[float, float]:
        _, refined = run.predict(held)
        accuracy = 100.0 * (refined.argmax(1) == labels).float().mean().item()
        return accuracy, -F.cross_entropy(refined, labels).item()

    run.observe()
    before = score()
    assert before[0] == 100.0
    seen: list = []
    used = backbone.queries_used
    plan = run.run(on_generation=seen.append)
    # 2 + 1 + 1 queries before the first generation: training and held-out features, the
    # start's prompts; the held-out scores cost nothing more.
    assert backbone.queries_used - used == plan.total == 3 + plan.generations * 8
    assert min(g.validation for g in seen) < 100.0  # the search did make things worse
    assert run.selected is not None and score() >= before
    assert score() == (run.selected.accuracy, -run.selected.loss)


def test_without_a_held_out_split_craft_returns_its_last_generation() -> None:
    backbone = black()
    run = craft(backbone, digits(backbone))
    points: list[torch.Tensor] = []
    run.run(on_generation=lambda _: points.append(run.prompt.point.clone()))
    assert run.selected is None and torch.equal(run.prompt.point, points[-1])
    with pytest.raises(ConfigError, match="validation: 0.01 of 40 training samples leaves no"):
        craft(backbone, digits(backbone), replace(SMALL, validation=0.01))


@pytest.mark.slow  # a full CMA-ES search on digits: 20-35 s on 2 cores
def test_craft_lowers_its_training_loss() -> None:
    backbone = black()
    train = digits(backbone, size=60)
    run = craft(backbone, train, CraftConfig(queries=120, popsize=6, intrinsic_dim=8, hidden=32))
    seen = []
    run.run(on_generation=seen.append)
    assert seen[-1].fitness < seen[0].fitness
    assert seen[-1].loss < seen[0].loss


@pytest.mark.slow  # a full CMA-ES search on digits: 20-35 s on 2 cores
def test_adapt_runs_craft_and_logs_accuracy_against_queries(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            *SHORT_CRAFT_ON_DIGITS,
            "backbone.query_budget=200",
            f"output.root={tmp_path}",
            "output.name=run",
        ],
    )
    result = adapt(config, progress=False, echo=lambda _: None)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    # 8 of the 40 held out: 3 queries for the training and held-out features and the
    # start's prompts, 6 per generation: 7 generations, logged at 5 and 7 (the returned one).
    assert [r.get("queries", 0) for r in records] == [0, 33, 45]
    assert [r.get("paper_queries", 0) for r in records] == [0, 20, 28]
    assert 0 <= records[-1]["selected"] <= 7 and "validation" in records[-1]
    assert set(result.adapted) == {
        "accuracy",
        "prompt_accuracy",
        "last_accuracy",  # the last generation's, what the authors' code returns
        "last_prompt_accuracy",
    }
    assert result.queries <= 200 and (tmp_path / "run" / "curve.png").is_file()
    assert result.trainable == 8 + (10 * 256 + 256) + (256 * 10 + 10)


def test_craft_is_a_classification_method(tmp_path: Path) -> None:
    config = load_config(None, ["method.name=craft", "backbone.level=black"])
    with pytest.raises(ConfigError, match="method 'craft' supports classification, not retrieval"):
        adapt(config, progress=False, echo=lambda _: None)


def test_the_uniform_projection_draws_as_the_authors_untrained_linear_layer() -> None:
    """``method.craft.projection: uniform`` is nn.Linear(dim, size)'s default initialisation,
    the authors' ``A``: every entry within 1/sqrt(dim), its spread 1/sqrt(3) of ``normal``'s."""
    dim, size = 64, 4 * 512
    torch.manual_seed(0)
    uniform = PROJECTIONS["uniform"](size, dim)
    torch.manual_seed(0)
    normal = PROJECTIONS["normal"](size, dim)
    linear = torch.nn.Linear(dim, size, bias=False).weight.detach()
    bound = 1 / math.sqrt(dim)
    assert uniform.shape == linear.shape == normal.shape == (size, dim)
    assert uniform.abs().max() <= bound and linear.abs().max() <= bound
    assert uniform.std().item() == pytest.approx(linear.std().item(), rel=0.02)
    assert uniform.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert normal.std().item() == pytest.approx(bound, rel=0.02)
    backbone = black()
    model = build_model(
        backbone, MethodConfig(name="craft", options={"craft": CraftConfig(projection="uniform")})
    )
    assert model.text_in.projection.abs().max() <= 1 / math.sqrt(model.text_in.dim)


@pytest.mark.parametrize("batch_size", [7, 256])
def test_the_calls_a_scoring_makes_are_known_before_it_runs(batch_size: int) -> None:
    """What a run checks its budget with is what scoring spends: the images, the distinct
    captions and the class prompts, each in slices of the batch."""
    backbone = black()
    test = prepare(load_dataset("digits", split="test", size=40, seed=0), backbone.tokenize)
    model = build_model(backbone, "craft")
    before = backbone.queries_used
    evaluate(model, test, batch_size=batch_size)
    spent = backbone.queries_used - before
    assert spent == evaluation_calls(test, batch_size=batch_size)
    assert (spent == 3) == (batch_size == 256)  # one call a part, unless sliced finer


def _adapt_argv(tmp_path: Path, name: str, budget: int) -> list[str]:
    """``fedgray adapt`` of CraFT on digits at one generation: 17 queries in all (3 to
    score zero-shot on validation, 1 for its features; 9 for CraFT: the training and
    held-out features, the start's prompts, one generation of 4 candidates, the mean and
    the augmented features; then the test features, and 3 to score zero-shot on test)."""
    config = tmp_path / "craft.yaml"
    config.write_text("{}\n")
    overrides = [
        *SHORT_CRAFT_ON_DIGITS,
        "method.craft.queries=9",
        f"backbone.query_budget={budget}",
        f"output.root={tmp_path / name}",
    ]
    return ["adapt", "--quiet", *(f"--set={item}" for item in overrides), str(config)]


def test_a_query_budget_the_test_read_would_exceed_is_refused_before_training(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A budget that covers training but not the test read after it is refused before a
    run folder exists, rather than failing at the end; one query more and the run ends,
    having spent all of it."""
    error = refused(_adapt_argv(tmp_path, "short", 16), capfd)
    assert "backbone.query_budget: 16 calls left, but this run makes up to 17" in error
    assert not (tmp_path / "short").exists()
    assert main(_adapt_argv(tmp_path, "exact", 17)) == 0
    (summary,) = (tmp_path / "exact").glob("*/summary.json")
    assert json.loads(summary.read_text())["queries"] == 17
