"""The suite's equality rule, kept by a lint of tests/: a bit-equality (``torch.equal``,
``np.array_equal``, ``np.testing.assert_array_equal``) stands only where both sides run the
same operations on the same shapes, or hold no float arithmetic at all. Two passes that
differ in shape or order (a text pass trimmed to the longest caption against open_clip's
full-context one) agree on one CPU and not on another, so such a comparison goes through
``tests.helpers.assert_close`` with the size of its reductions; hand-set tolerances
(``torch.allclose``, ``torch.testing.assert_close``, ``np.allclose``) are refused too.

:data:`SAME_SHAPES` lists every bit-equality of the suite with the reason it is one. A new
bit-equality fails here until it is listed, with its reason, or written with a tolerance.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).parent
ROOT = TESTS.parent
HELPERS = "tests/helpers.py"  # the one place hand-set tolerances may be written
BIT_EQUALITY = {("torch", "equal"), ("np", "array_equal"), ("testing", "assert_array_equal")}
TOLERANCE = {
    ("torch", "allclose"),
    ("np", "allclose"),
    ("testing", "assert_close"),
    ("testing", "assert_allclose"),
}

# (file, function) -> (bit-equalities there, why each is one). "No arithmetic": integers,
# bytes, copies, indexing, a seeded draw; "same call": one function on the same inputs.
SAME_SHAPES: dict[tuple[str, str], tuple[int, str]] = {
    ("tests/helpers.py", "assert_adapters_start_as_zero_shot"): (
        2,
        "adapters at initialisation: the sealed backbone's own passes plus exact zeros",
    ),
    (
        "tests/adapters/test_adapters.py",
        "test_untrained_adapters_reproduce_the_bare_backbone_exactly",
    ): (
        2,
        "adapters at initialisation: the same backbone passes plus exact zeros",
    ),
    ("tests/adapters/test_white.py", "test_lora_at_init_reproduces_the_backbone_exactly"): (
        2,
        "LoRA's B at zero adds exact zeros to the same passes",
    ),
    ("tests/adapters/test_white.py", "test_a_new_lora_replaces_the_one_attached_before"): (
        1,
        "B at zero again: the same pass as before any LoRA",
    ),
    (
        "tests/adapters/test_white.py",
        "test_lora_a_is_frozen_the_same_in_every_build_and_never_in_the_state",
    ): (
        1,
        "the same seeded draw of A in every build",
    ),
    (
        "tests/adapters/test_white.py",
        "test_lora_training_changes_outputs_never_the_backbone_weights",
    ): (
        1,
        "backbone weights against their copy: no arithmetic",
    ),
    (
        "tests/adapters/test_whitening.py",
        "test_the_whitening_is_public_state_computed_alike_and_never_sent",
    ): (
        2,
        "the same statistics computed twice from the same public images; a cached copy",
    ),
    (
        "tests/adapters/test_whitening.py",
        "test_whitened_adapters_start_as_the_bare_backbone_bit_for_bit",
    ): (
        1,
        "a whitened delta at zero adds exact zeros to the same passes",
    ),
    ("tests/backbone/attacks.py", "leaked_weights"): (
        1,
        "the attack: a graph tensor whose sorted values are a weight's, copied not computed",
    ),
    ("tests/backbone/test_artifact.py", "test_round_trip_gives_the_unsealed_outputs"): (
        2,
        "the same weights decrypted: the same calls",
    ),
    (
        "tests/backbone/runtime/test_channel.py",
        "test_malformed_messages_leave_a_pending_backward_intact",
    ): (
        2,
        "the same call and backward in the same runtime, before and after garbage",
    ),
    ("tests/backbone/runtime/test_channel.py", "test_the_wire_round_trips_tensors_exactly"): (
        1,
        "bytes through the wire codec: no arithmetic",
    ),
    ("tests/backbone/test_families.py", "test_isolated_runtime_equals_in_process"): (
        1,
        "token ids: integers",
    ),
    ("tests/backbone/test_families.py", "test_fedgray_seal_round_trip"): (
        1,
        "weights through an artifact: no arithmetic",
    ),
    ("tests/backbone/test_hf_tokenizer.py", "test_fedgray_tokenizes_as_the_hf_tokenizer"): (
        3,
        "token ids: integers",
    ),
    ("tests/backbone/test_hf_tokenizer.py", "test_an_artifact_tokenizes_as_the_hf_tokenizer"): (
        2,
        "token ids: integers",
    ),
    ("tests/backbone/test_loading.py", "test_local_checkpoint_round_trip"): (
        1,
        "the sealed pass is open_clip's on the same normalised pixels: the same call",
    ),
    ("tests/backbone/test_opaque.py", "test_outputs_and_gradients_equal_a_plain_forward"): (
        1,
        "the opaque node runs the plain forward and its backward on the same shapes",
    ),
    (
        "tests/backbone/test_opaque.py",
        "test_a_second_backward_through_a_retained_graph_gives_the_same_gradients",
    ): (
        1,
        "the same backward recomputed on the same shapes",
    ),
    (
        "tests/backbone/runtime/test_runtime.py",
        "test_isolated_outputs_and_gradients_match_in_process",
    ): (
        3,
        "token ids; the isolated runtime runs the in-process forward on the same shapes",
    ),
    ("tests/backbone/test_sealed.py", "test_white_exposes_the_plain_module"): (
        1,
        "the same call on a copy of the same input",
    ),
    ("tests/backbone/runtime/test_service.py", "test_a_served_runtime_answers_like_in_process"): (
        1,
        "token ids: integers",
    ),
    ("tests/blackbox/test_craft.py", "test_refinement_is_the_identity_at_init"): (
        1,
        "a zero-initialised residual adds exact zeros",
    ),
    (
        "tests/blackbox/test_craft.py",
        "test_prompt_at_zero_is_the_bare_black_box_on_the_context_words_exactly",
    ): (
        1,
        "the context words' own embeddings plus zero: the same trimmed pass, same length",
    ),
    ("tests/blackbox/test_craft.py", "test_the_prompt_is_the_context_words_embeddings_plus_a_z"): (
        2,
        "token ids; the prompt is the same matmul on the same shapes",
    ),
    ("tests/blackbox/test_craft.py", "test_the_search_is_deterministic_from_its_seed"): (
        1,
        "the same seeded search run twice",
    ),
    (
        "tests/blackbox/test_craft.py",
        "test_craft_runs_from_a_given_search_distribution_and_returns_the_new_one",
    ): (
        2,
        "the given mean, copied in; and that it moved",
    ),
    (
        "tests/blackbox/test_craft.py",
        "test_augmentation_crops_and_flips_and_repeats_from_its_seed",
    ): (
        1,
        "the same seeded augmentation twice",
    ),
    (
        "tests/blackbox/test_craft.py",
        "test_without_a_held_out_split_craft_returns_its_last_generation",
    ): (
        1,
        "the last generation's point, copied",
    ),
    (
        "tests/blackbox/test_craft.py",
        "test_the_prompt_moves_to_the_mean_of_a_fresh_sample_each_generation",
    ): (
        2,
        "the point is the sample's mean, copied; and not the old mean",
    ),
    ("tests/data/test_digits.py", "test_stratified_split_is_disjoint_cover_with_class_fractions"): (
        1,
        "indices: integers",
    ),
    ("tests/data/test_digits.py", "test_images_captions_and_prompts"): (
        1,
        "grey copied into three channels",
    ),
    ("tests/data/test_digits.py", "test_split_is_stratified_and_deterministic"): (
        2,
        "the same seeded split loaded twice; labels are integers",
    ),
    ("tests/data/test_mnist.py", "test_images_look_like_the_other_digit_sets"): (
        1,
        "grey copied into three channels",
    ),
    ("tests/data/test_mnist.py", "test_split_is_stratified_disjoint_and_deterministic"): (
        2,
        "the same seeded split loaded twice; labels are integers",
    ),
    ("tests/data/test_partitioners.py", "_assert_disjoint_cover"): (2, "indices: integers"),
    ("tests/data/test_partitioners.py", "test_iid"): (2, "indices: integers"),
    ("tests/data/test_partitioners.py", "test_dirichlet_cover_determinism_and_min_size"): (
        2,
        "indices: integers",
    ),
    ("tests/data/test_registry.py", "test_world_splits_are_disjoint_and_deterministic"): (
        3,
        "the same seeded render, elementwise only",
    ),
    ("tests/data/test_registry.py", "test_digits_size_keeps_first_samples"): (
        1,
        "the same rows, elementwise only",
    ),
    ("tests/data/test_world.py", "test_render_is_deterministic_uint8"): (2, "uint8 renders"),
    ("tests/data/test_world.py", "test_make_world_set_matches_scenes_and_renders"): (
        2,
        "the same rows picked or sliced: no arithmetic",
    ),
    ("tests/data/test_world.py", "test_domains_relate_as_specified"): (1, "uint8 renders"),
    (
        "tests/owner/test_embedding_rows.py",
        "test_updating_the_used_rows_only_gives_adamws_weights_bit_for_bit",
    ): (
        1,
        "the same steps; AdamW's element-wise ops on a gathered copy of the same rows",
    ),
    (
        "tests/tasks/test_resolution.py",
        "test_prepared_tokens_are_each_captions_own_with_equal_captions_tokenized_once",
    ): (
        1,
        "token ids: integers",
    ),
    (
        "tests/owner/test_embedding_rows.py",
        "test_pretraining_gives_the_weights_of_the_loop_with_adamw_over_every_row",
    ): (
        1,
        "the same steps on the same shapes; AdamW's element-wise ops on the same rows",
    ),
    (
        "tests/owner/test_embedding_rows.py",
        "test_the_checkpoint_is_the_same_whatever_thread_count_the_caller_set",
    ): (
        1,
        "the same recipe on the same shapes and the same pinned thread count",
    ),
    ("tests/data/test_world.py", "test_a_worker_pool_renders_the_same_set_as_one_loop"): (
        2,
        "the same scenes rendered in blocks by other processes: the same ops on the same shapes",
    ),
    (
        "tests/deploy/test_faults.py",
        "test_a_restarted_superlink_resumes_the_run_and_ends_as_an_uninterrupted_one",
    ): (
        1,
        "a resume against an uninterrupted run: the same steps on the same shapes",
    ),
    (
        "tests/fl/common/test_compression.py",
        "test_the_global_adapters_travel_down_exactly_on_the_float16_grid",
    ): (
        1,
        "values on the float16 grid cast both ways: exact",
    ),
    ("tests/fl/common/test_compression.py", "test_a_compressed_run_resumes_to_the_same_adapters"): (
        1,
        "a resume against an uninterrupted run",
    ),
    ("tests/fl/simulation/test_faults.py", "_same"): (1, "a resume against an uninterrupted run"),
    ("tests/fl/test_federation.py", "test_personal_adapters_stay_on_their_site"): (
        1,
        "two sites' adapters differ (a negated equality)",
    ),
    (
        "tests/strategies/test_fold.py",
        "test_the_folded_mean_is_the_weighted_mean_bit_for_bit_in_any_order",
    ): (
        2,
        "the fold's promise: its compensated float64 sum rounds to the same float32 in any "
        "order (elementwise numpy, no kernel choice); the plain float32 sum does not",
    ),
    ("tests/fl/serverapp/test_resume.py", "test_resumed_run_ends_with_the_same_adapters"): (
        1,
        "a resume against an uninterrupted run",
    ),
    (
        "tests/fl/serverapp/test_resume.py",
        "test_a_resumed_run_samples_the_sites_an_uninterrupted_one_does",
    ): (
        1,
        "a resume against an uninterrupted run",
    ),
    ("tests/fl/serverapp/test_resume.py", "test_resume_needs_the_strategy_state"): (
        1,
        "a resume without the strategy's moments differs (a negated equality)",
    ),
    ("tests/fl/serverapp/test_resume_checks.py", "test_personal_adapters_survive_a_resume"): (
        2,
        "a resume against an uninterrupted run",
    ),
    ("tests/fl/serverapp/test_select.py", "_equal"): (
        1,
        "a saved round's adapters against the same round replayed or loaded",
    ),
    ("tests/fl/clientapp/test_partitions.py", "test_sites_get_disjoint_deterministic_partitions"): (
        1,
        "indices: integers",
    ),
    ("tests/fl/clientapp/test_partitions.py", "test_by_group_gives_each_site_one_domain"): (
        1,
        "the same rendered row: no arithmetic",
    ),
    (
        "tests/privacy/test_cached_features.py",
        "test_cached_text_features_equal_the_models_and_are_encoded_once",
    ): (
        1,
        "rows served from the cache: no recomputation",
    ),
    (
        "tests/privacy/test_cached_features.py",
        "test_cached_trainer_takes_the_same_dp_steps_and_accounts_the_same",
    ): (
        1,
        "a frozen weight against its copy",
    ),
    (
        "tests/privacy/test_dp_sgd.py",
        "test_a_dp_round_changes_only_adapters_and_counts_its_steps",
    ): (
        2,
        "weights against their copies; the same backbone call before and after",
    ),
    (
        "tests/privacy/test_randomness.py",
        "test_default_randomness_repeats_from_the_seeds_and_warns",
    ): (
        1,
        "the same seeded run twice",
    ),
    ("tests/privacy/test_randomness.py", "test_secure_mode_draws_from_the_secure_generator"): (
        1,
        "two secure runs differ (a negated equality)",
    ),
    ("tests/test_devices.py", "test_dp_sgd_steps_stay_float32_whatever_the_precision"): (
        1,
        "DP-SGD ignores train.precision: the same float32 steps",
    ),
    ("tests/test_devices.py", "test_a_retained_graph_recomputes_under_the_forwards_autocast"): (
        1,
        "the same backward recomputed under the same autocast",
    ),
    ("tests/test_devices.py", "test_batches_index_the_data_in_a_dataloaders_order"): (
        1,
        "the same rows in the same order: indexing",
    ),
    (
        "tests/backbone/runtime/test_channel.py",
        "test_the_tokenizer_cache_stays_bounded_and_right",
    ): (
        2,
        "no arithmetic: token ids of the same texts",
    ),
    ("tests/data/test_animal.py", "test_the_package_data_reads_without_its_loader"): (
        1,
        "no arithmetic: one grey channel copied into three",
    ),
    ("tests/data/test_digits.py", "test_three_way_split_cuts_validation_from_training"): (
        4,
        "no arithmetic: index arrays of seeded splits",
    ),
    ("tests/data/test_fashion.py", "test_the_debian_package_holds_the_whole_set"): (
        1,
        "no arithmetic: the IDX file's bytes as read twice",
    ),
    ("tests/data/test_registry.py", "test_world_validation_is_a_third_disjoint_range"): (
        1,
        "same call: the same seeded render of the validation split",
    ),
    (
        "tests/privacy/test_audit.py",
        "test_input_canaries_are_site_examples_with_another_label_and_caption",
    ): (
        4,
        "no arithmetic: canary images are copies of site images, tokens are ids",
    ),
    ("tests/fl/serverapp/test_server_without_backbone.py", "_assert_same"): (
        1,
        "same call: the same seeded adapter construction around the interface or the backbone",
    ),
    (
        "tests/privacy/test_inversion_noise.py",
        "test_the_noise_of_each_epsilon_is_the_same_in_every_run_and_moves_with_the_seed",
    ): (
        2,
        "same call: the same private update from the same gradients and seed",
    ),
}


def _call_name(call: ast.Call) -> tuple[str | None, str] | None:
    if not isinstance(call.func, ast.Attribute):
        return None
    base = call.func.value
    owner = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
    return owner, call.func.attr


def comparisons(path: str, source: str) -> tuple[Counter[tuple[str, str]], list[str]]:
    """Bit-equalities in ``source`` counted by (file, enclosing function), and one line per
    hand-set tolerance outside tests/helpers.py."""
    tree = ast.parse(source)
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    bits: Counter[tuple[str, str]] = Counter()
    refused = []
    for node in ast.walk(tree):
        name = _call_name(node) if isinstance(node, ast.Call) else None
        if name is None:
            continue
        inside = [f for f in functions if f.lineno <= node.lineno <= (f.end_lineno or 0)]
        where = max(inside, key=lambda f: f.lineno).name if inside else "<module>"
        if name in BIT_EQUALITY:
            bits[(path, where)] += 1
        elif name in TOLERANCE and path != HELPERS:
            refused.append(
                f"{path}:{node.lineno} {'.'.join(map(str, name))}: a hand-set tolerance; "
                "use tests.helpers.assert_close(..., terms=...)"
            )
    return bits, refused


def violations(path: str, source: str) -> list[str]:
    """What in ``source`` (the file at ``path``) breaks the equality rule."""
    bits, problems = comparisons(path, source)
    listed = {key: n for key, (n, _) in SAME_SHAPES.items() if key[0] == path}
    for key in sorted(bits.keys() | listed.keys()):
        found, allowed = bits.get(key, 0), listed.get(key, 0)
        if found != allowed:
            problems.append(
                f"{key[0]}::{key[1]}: {found} bit-equalities, {allowed} listed as same-shape "
                "comparisons in tests/test_equality_rule.py"
            )
    return problems


def test_every_bit_equality_is_a_listed_same_shape_comparison() -> None:
    problems = []
    for file in sorted(TESTS.rglob("*.py")):
        path = file.relative_to(ROOT).as_posix()
        problems += violations(path, file.read_text())
    assert problems == []


def test_a_trimmed_against_full_bit_equality_is_caught() -> None:
    """The comparison that failed on AMD EPYC, written back as it was."""
    source = """
def assert_adapters_start_as_zero_shot(backbone, method, model, captions):
    adapted = build_model(backbone, method)
    pixels, tokens = image_and_tokens(backbone, captions)
    with torch.no_grad():
        image, text = adapted(pixels, tokens)
        assert torch.equal(image, backbone.encode_image(pixels))
        assert torch.equal(text, backbone.encode_text(tokens))
        assert torch.equal(text, model.encode_text(tokens))
"""
    assert violations(HELPERS, source) == [
        "tests/helpers.py::assert_adapters_start_as_zero_shot: 3 bit-equalities, 2 listed as "
        "same-shape comparisons in tests/test_equality_rule.py"
    ]


def test_unlisted_bit_equalities_and_hand_set_tolerances_are_refused() -> None:
    source = """
def test_batched_against_per_sample(model, x):
    assert np.array_equal(model(x)[:1], model(x[:1]))
    assert torch.allclose(model(x)[:1], model(x[:1]), atol=1e-6)
"""
    assert violations("tests/test_new.py", source) == [
        "tests/test_new.py:4 torch.allclose: a hand-set tolerance; use "
        "tests.helpers.assert_close(..., terms=...)",
        "tests/test_new.py::test_batched_against_per_sample: 1 bit-equalities, 0 listed as "
        "same-shape comparisons in tests/test_equality_rule.py",
    ]
