"""The owner's optimiser: AdamW that updates the token-embedding rows captions use, with
the same bits as torch's AdamW over the whole table; and pretraining with it."""

from __future__ import annotations

import torch

from fedgray.backbone import SealedBackbone, create_clip, get_tokenizer
from fedgray.backbone.families import text_parts
from fedgray.config import PretrainConfig
from fedgray.owner.embedding_rows import UsedRowsAdamW
from fedgray.owner.pretrain import PRETRAIN_THREADS, _lr_factor, batch_loss, owner_photos, pretrain
from fedgray.tasks.data import TaskData, prepare

RECIPE = PretrainConfig(steps=4, batch_size=8, warmup_steps=2, train_size=64)
MODEL = "fedgray-micro"


def _trained(*, used_rows: bool) -> tuple[dict[str, torch.Tensor], TaskData]:
    """The micro CLIP's weights after the recipe's steps of the owner's loss: the owner's
    loop as it was, with torch's AdamW over every parameter, or with the used rows, on the
    pretraining's threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        return _loop(used_rows=used_rows)
    finally:
        torch.set_num_threads(threads)


def _loop(*, used_rows: bool) -> tuple[dict[str, torch.Tensor], TaskData]:
    torch.manual_seed(RECIPE.seed)
    model = create_clip(MODEL, None)
    owner = SealedBackbone(model, get_tokenizer(MODEL), name=MODEL, level="white")
    model.requires_grad_(True).train()
    world = owner_photos(RECIPE)
    data = prepare(world, owner.tokenize)
    optimizer: UsedRowsAdamW | torch.optim.AdamW
    if used_rows:
        table, used = text_parts(model).embedding.weight, torch.unique(data.tokens)
        optimizer = UsedRowsAdamW(
            model.parameters(), table=table, rows=used, lr=RECIPE.lr, weight_decay=0.1
        )
        inner = optimizer.optimizer
    else:
        optimizer = inner = torch.optim.AdamW(model.parameters(), lr=RECIPE.lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(inner, lambda s: _lr_factor(s, RECIPE))
    generator = torch.Generator().manual_seed(RECIPE.seed)
    for _ in range(RECIPE.steps):
        index = torch.randint(len(data), (RECIPE.batch_size,), generator=generator)
        loss = batch_loss(owner, data, index)
        model.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    if isinstance(optimizer, UsedRowsAdamW):
        optimizer.finish()
    return {k: v.clone() for k, v in model.state_dict().items()}, data


def test_updating_the_used_rows_only_gives_adamws_weights_bit_for_bit() -> None:
    torch.manual_seed(0)
    start = create_clip(MODEL, None).state_dict()["token_embedding.weight"]
    plain, data = _trained(used_rows=False)
    rows, _ = _trained(used_rows=True)
    assert plain.keys() == rows.keys()
    for key, tensor in plain.items():
        assert torch.equal(rows[key], tensor), key
    used = torch.unique(data.tokens)
    unused = torch.ones(len(start), dtype=torch.bool)
    unused[used] = False
    table = rows["token_embedding.weight"]
    assert 20 < len(used) < 100 < int(unused.sum())  # a few dozen rows of 49,408 read
    # the unused rows moved by the weight decay alone: a factor below 1, the same for all
    ratio = table[unused] / start[unused]
    assert 0.99 < float(ratio.min()) and float(ratio.max()) < 1.0


def test_pretraining_gives_the_weights_of_the_loop_with_adamw_over_every_row() -> None:
    checkpoint = torch.load(pretrain(MODEL, RECIPE, progress=False), weights_only=True)
    plain, _ = _trained(used_rows=False)
    assert checkpoint["state_dict"].keys() == plain.keys()
    for key, tensor in plain.items():
        assert torch.equal(checkpoint["state_dict"][key], tensor), key


def test_the_checkpoint_is_the_same_whatever_thread_count_the_caller_set() -> None:
    """A site's process (one thread) and ``fedgray pretrain`` (every core) pretrain the same
    bits; the caller's thread count is given back."""
    threads = torch.get_num_threads()
    weights = []
    try:
        for caller in (1, 3):
            torch.set_num_threads(caller)
            path = pretrain(MODEL, RECIPE, progress=False)
            assert torch.get_num_threads() == caller
            weights.append(torch.load(path, weights_only=True)["state_dict"])
    finally:
        torch.set_num_threads(threads)
    one, three = weights
    for key, tensor in one.items():
        assert torch.equal(three[key], tensor), key
