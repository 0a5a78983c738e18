"""``fedgray predict``, ``fedgray evaluate`` and ``fedgray export``: using a trained model.

Everything a command reads is loaded and checked (the signature of a bundle, the adapters
against the backbone and method, the images) before its output folder is created, so a
refused command writes nothing.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedgray.runs import RunFolder


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a finished run folder or an exported bundle")
    parser.add_argument(
        "--verify-key",
        type=Path,
        metavar="PEM",
        help="the exporter's verification key (required for a bundle)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="where this site's backbone comes from, e.g. --set backbone.artifact=tiny.fgs "
        "(backbone.artifact, .verify_key, .content_key, .isolated, .runtime; train.device, "
        ".precision, .threads)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="output folder (default: a new one in SOURCE)"
    )
    parser.add_argument(
        "--personal",
        type=Path,
        metavar="STATE_DIR|BUNDLE",
        help="this site's state folder (RUN_DIR/sites/site-N, or a deployed site's state-dir) "
        "or its personal-only bundle: its personal adapters go over the global ones",
    )
    parser.add_argument(
        "--personal-verify-key",
        type=Path,
        metavar="PEM",
        help="the verification key of a personal bundle's signer (default: --verify-key)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _output(args: argparse.Namespace, prefix: str) -> Path:
    if args.out is not None:
        return RunFolder(args.out.parent, args.out.name).path
    return RunFolder(args.source, prefix=prefix).path


def _cmd_predict(args: argparse.Namespace) -> None:
    from fedgray.use.bundle import open_source
    from fedgray.use.inputs import read_images, read_lines, run_classes
    from fedgray.use.predict import write_classes, write_rankings
    from fedgray.use.source import open_adapted

    trained = open_source(
        args.source,
        args.overrides,
        verify_key=args.verify_key,
        personal=args.personal,
        personal_verify_key=args.personal_verify_key,
    )
    images = read_images(args.images)
    captions = read_lines(args.captions, "caption") if args.captions else None
    if captions is None:
        if args.classes:
            names = read_lines(args.classes, "class name")
            prompts = [[name] for name in names]
        else:
            names, prompts = run_classes(trained.config.data)
    backbone, scorer = open_adapted(trained)
    features = scorer.image_features(images.pixels.to(backbone.device), progress=not args.quiet)
    if captions is not None:
        texts = scorer.text_features(captions)
        out = _output(args, "predict")
        written = write_rankings(out, images.files, captions, features, texts, top=args.top)
    else:
        logits = scorer.class_scores(features, prompts)
        out = _output(args, "predict")
        written = write_classes(out, images.files, names, logits)
    print(f"{len(images.files)} images; wrote {written.csv} and {written.jsonl}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from fedgray.materials import load_task_data
    from fedgray.tasks import prepare
    from fedgray.use.bundle import open_source
    from fedgray.use.evaluate import evaluate_model, write_evaluation
    from fedgray.use.inputs import read_images, run_classes
    from fedgray.use.source import open_adapted

    trained = open_source(
        args.source,
        args.overrides,
        verify_key=args.verify_key,
        personal=args.personal,
        personal_verify_key=args.personal_verify_key,
    )
    folder = read_images(args.data) if args.data is not None else None
    if folder is not None and folder.labelled is None:
        raise ValueError(f"{args.data}: evaluate needs a captions.csv (file, caption[, label])")
    backbone, scorer = open_adapted(trained)
    if folder is not None and folder.labelled is not None:
        dataset = folder.labelled
        if not dataset.class_names:  # captions only: Recall@K, scored beside the run's classes
            run_names, run_prompts = run_classes(trained.config.data)
            dataset = replace(dataset, class_names=run_names, class_prompts=run_prompts)
        data = prepare(dataset, backbone.tokenize).to(backbone.device)
        names, prompts = dataset.class_names, dataset.class_prompts
        where = str(args.data)
    else:
        data = load_task_data(trained.config.data, backbone, split="test")
        names, prompts = run_classes(trained.config.data)
        where = f"{trained.config.data.dataset} test split ({trained.config.data.test_size})"
    result = evaluate_model(scorer, data, prompts, names)
    out = _output(args, "evaluate")
    report: dict[str, Any] = {
        "data": where,
        "metrics": result.metrics,
        "per_class": result.per_class,
    }
    (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    files = write_evaluation(out, result, names, title=f"{trained.config.method.name} on {where}")
    for key, value in result.metrics.items():
        print(f"{key:<10}{value:>8.2f}")
    shown = ", ".join(str(p) for p in [out / "evaluation.json", *files])
    print(f"{len(data)} samples of {where}; wrote {shown}")


def _cmd_export(args: argparse.Namespace) -> None:
    from fedgray.use.bundle import CARD, export

    out = args.out if args.out is not None else args.run_dir / "bundle"
    bundle = export(
        args.run_dir,
        out,
        signing_key=args.signing_key,
        personal=args.personal,
        personal_only=args.personal_only,
    )
    print(f"bundle: {bundle} (model card: {bundle / CARD})")


def add_use_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``predict``, ``evaluate`` and ``export`` to the ``fedgray`` command."""
    predict = commands.add_parser(
        "predict",
        help="classify or rank a folder of images with a trained model",
        description="Score every image of a folder with a run's (or bundle's) adapters on "
        "this site's sealed backbone: with class names (--classes, or the run's own classes) "
        "write each image's prediction and class probabilities; with --captions rank the "
        "images for each caption and the captions for each image. CSV and JSON lines.",
    )
    _source_arguments(predict)
    predict.add_argument("images", type=Path, help="a folder of images (or with captions.csv)")
    what = predict.add_mutually_exclusive_group()
    what.add_argument("--classes", type=Path, metavar="FILE", help="class names, one per line")
    what.add_argument("--captions", type=Path, metavar="FILE", help="captions, one per line")
    predict.add_argument("--top", type=int, default=10, help="ranks kept per caption and image")
    predict.set_defaults(handler=_cmd_predict)
    evaluate = commands.add_parser(
        "evaluate",
        help="a trained model's metrics on labelled data, confusion matrix, per class",
        description="Evaluate a run's (or bundle's) adapters on a labelled folder "
        "(captions.csv with file, caption[, label]) or, without DATA, on the run's own test "
        "data, where the figures equal the run's final evaluation. Writes evaluation.json, "
        "and with labels per_class.csv and confusion.png.",
    )
    _source_arguments(evaluate)
    evaluate.add_argument("data", type=Path, nargs="?", help="a labelled folder (captions.csv)")
    evaluate.set_defaults(handler=_cmd_evaluate)
    export = commands.add_parser(
        "export",
        help="a signed model bundle and model card of a finished run",
        description="Write RUN_DIR's global adapters, resolved config, backbone identity, "
        "privacy ledger summary, metrics and data description as a bundle folder signed "
        "with an Ed25519 key (fedgray keys makes one), with a Markdown model card.",
    )
    export.add_argument("run_dir", type=Path, help="a finished run folder")
    export.add_argument(
        "--signing-key", type=Path, required=True, metavar="PEM", help="Ed25519 key (PEM)"
    )
    export.add_argument(
        "--out", type=Path, metavar="DIR", help="bundle folder to create (default RUN_DIR/bundle)"
    )
    export.add_argument(
        "--personal",
        type=Path,
        metavar="STATE_DIR",
        help="add this site's personal adapters (its state folder) to the bundle",
    )
    export.add_argument(
        "--personal-only",
        action="store_true",
        help="export the site's personal adapters (--personal) without the global ones; the "
        "bundle names the global adapters it goes over by their hash",
    )
    export.set_defaults(handler=_cmd_export)
