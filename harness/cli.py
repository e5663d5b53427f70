"""`harness` command line. Every user error is one line naming the file or key, with exit code 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError

# OpenMP threads that spin while waiting made torch 5-6x slower on a busy 2-core machine; must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _params(pairs: list[str] | None) -> dict[str, Any]:
    """``--param key=value`` (value parsed as YAML, so numbers and lists work)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise HarnessError(f"--param {pair}: expected key=value")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _with_device(reg, kind: str, name: str, params: dict[str, Any], device: str | None) -> dict[str, Any]:
    """``--device`` as the plugin's ``device`` param, for plugins that run a network; refused by the others."""
    if device:
        if "device" not in reg.get(kind, name).params:
            raise HarnessError(f"--device: {kind} '{name}' has no device (it does not run a network)")
        params = {**params, "device": device}
    return params


def _check_device(device: str | None) -> str | None:
    import re

    if device is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise HarnessError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def _registry(args):
    from harness.registry import Selection, default_registry

    plugin_opts = getattr(args, "plugin_opts", None) or []
    selection = Selection.from_env(
        allow=getattr(args, "allow_plugins", None),
        block=[o[3:] for o in plugin_opts if o.startswith("no:")] + (getattr(args, "block_plugins", None) or []),
        modules=[o for o in plugin_opts if not o.startswith("no:")],
        trace=getattr(args, "trace_hooks", False))
    reg = default_registry(strict=args.strict, selection=selection)
    for warning in reg.warnings:
        print(f"harness: warning: {warning}", file=sys.stderr)
    return reg


# -- commands ------------------------------------------------------------------------------------
def cmd_plugins(args) -> int:
    reg = _registry(args)
    entries = [e.as_dict() for e in reg.listing()]
    errors = [e.as_dict() for e in reg.errors]
    skipped = [e.as_dict() for e in reg.skipped]
    if args.json:
        print(json.dumps({"plugins": entries, "errors": errors, "skipped": skipped, "warnings": reg.warnings},
                         indent=1))
        return 0
    from tabulate import tabulate

    print(tabulate([[e["kind"], e["name"], e["version"], e["origin"], e["summary"]] for e in entries],
                   headers=["kind", "name", "version", "origin", "summary"]))
    if skipped:
        print("\nnot loaded (allow/block lists):")
        print(tabulate([[e["kind"] or "-", e["name"] or "-", e["version"], e["origin"], e["status"]] for e in skipped],
                       headers=["kind", "name", "version", "origin", "status"]))
    for err in errors:
        print(f"load error: {err['origin']}: {err['error']}", file=sys.stderr)
    return 0


def cmd_plugins_new(args) -> int:
    from harness.scaffold import new_plugin

    out = new_plugin(args.kind, args.name, args.out)
    print(f"{args.kind} plugin package written to {out}; try: pip install -e {out} && pytest {out}")
    return 0


def cmd_data_prepare(args) -> int:
    v_mean = None if args.v_mean in (None, "none") else float(args.v_mean)
    if args.format == "images":
        from harness.data.pool import prepare_images

        given = [f"--{k.replace('_', '-')}" for k in ("val_fraction", "test_fraction", "classes")
                 if getattr(args, k) is not None]
        if len(args.inputs) != 1:
            raise HarnessError("data prepare images: needs one FOLDER")
        if given:
            raise HarnessError(f"data prepare images: {given[0]} does not apply to an unlabelled pool")
        _print_dataset(prepare_images(args.inputs[0], args.out, size=args.size, v_mean=v_mean,
                                      progress=not args.quiet), args)
        return 0
    if args.format != "neu-seg" and args.test_fraction == 1 and args.val_fraction:
        raise HarnessError(f"--test-fraction 1 puts every image in test; --val-fraction {args.val_fraction} "
                           "has nothing left to take")
    val_fraction = 0.1 if args.val_fraction is None else args.val_fraction
    test_fraction = 0.2 if args.test_fraction is None else args.test_fraction
    common = dict(size=args.size, val_fraction=val_fraction, seed=args.seed, progress=not args.quiet)
    if args.format == "neu-seg":
        from harness.data.neu_seg import prepare_neu_seg

        summary = prepare_neu_seg(args.inputs[0], args.out, v_mean=108.0 if args.v_mean is None else v_mean, **common)
    elif args.format == "masks":
        from harness.data.masks import prepare_masks

        if len(args.inputs) != 2 or not args.classes:
            raise HarnessError("data prepare masks: needs IMAGES MASKS and --classes a,b,c")
        summary = prepare_masks(args.inputs[0], args.inputs[1], args.classes.split(","), args.out, v_mean=v_mean,
                                test_fraction=test_fraction, **common)
    else:
        from harness.data.roboflow import find_roboflow_splits, prepare_coco

        if len(args.inputs) == 2:
            sources = {"train": (Path(args.inputs[0]), Path(args.inputs[1]))}
        elif len(args.inputs) == 1:
            sources = find_roboflow_splits(args.inputs[0])
        else:
            raise HarnessError("data prepare coco: needs ROBOFLOW_ROOT, or COCO_JSON IMAGES")
        summary = prepare_coco(sources, args.out, v_mean=v_mean, test_fraction=test_fraction, **common)
    _print_dataset(summary, args)
    return 0


def _print_dataset(summary: dict[str, Any], args) -> None:
    from harness.data.masks import summary_table

    print(json.dumps(summary, indent=1, default=str) if args.json else summary_table(summary, args.out))


def cmd_data_generate(args) -> int:
    from harness.data.synthetic import generate_synthetic

    summary = generate_synthetic(args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                                 size=args.size, seed=args.seed, progress=not args.quiet)
    _print_dataset(summary, args)
    return 0


def cmd_degrade(args) -> int:
    from harness.degrade import degrade_folder

    plugin = _registry(args).create("degradation", args.name, _params(args.param))
    n = degrade_folder(plugin, args.severity, args.seed, args.in_dir, args.out_dir, progress=not args.quiet,
                       workers=args.workers)
    print(f"{n} images degraded with {args.name} severity {args.severity} seed {args.seed} -> {args.out_dir}")
    return 0


def cmd_degrade_estimate(args) -> int:
    from harness.estimate import entry, estimate, report

    est = estimate(args.images_dir, reference=args.reference, reference_images=args.reference_images,
                   limit=args.limit, seed=args.seed)
    print(report(est))
    header = (f"# harness degrade estimate {args.images_dir} (reference: {est.reference}): a `degradations` entry;\n"
              "# paste it into a matrix's degradations or a segmenter's train_on: {augment: [...]}\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + yaml.safe_dump(entry(est, args.label), sort_keys=False))
    print(f"twin -> {args.out}")
    return 0


def cmd_train_segmenter(args) -> int:
    reg = _registry(args)
    plugin = reg.create("segmenter", args.name,
                        _with_device(reg, "segmenter", args.name, _params(args.param), _check_device(args.device)))
    if not plugin.config.get("config"):  # a user's own config file replaces the profile
        plugin.check_profile(args.profile)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plugin.train(Path(args.data), out, args.profile, args.seed, args.init)
    print(f"model written to {out}")
    return 0


def _adapter(args):
    params = _params(args.param)
    if getattr(args, "profile", None):
        params["profile"] = args.profile
    reg = _registry(args)
    return reg.create("adapter", args.name,
                      _with_device(reg, "adapter", args.name, params, _check_device(getattr(args, "device", None))))


def cmd_train_adapter(args) -> int:
    from harness.imageio import list_images

    plugin = _adapter(args)
    if not plugin.trainable:
        raise HarnessError(f"adapter '{args.name}' needs no training (it is used as it is)")
    source = list_images(args.source)
    target = list_images(args.target) if args.target else []
    if plugin.fit_data != "source" and not target:
        raise HarnessError(f"adapter '{args.name}' fits on {plugin.fit_data} A and B images: give --target")
    if plugin.fit_data == "paired":  # B images are matched to their clean originals by file name
        by_stem = {p.stem: p for p in source}
        missing = [p.name for p in target if p.stem not in by_stem]
        if missing:
            raise HarnessError(f"{args.source}: no clean original for {args.target}/{missing[0]}")
        source = [by_stem[p.stem] for p in target]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(plugin, "needs_segmenter", False):
        _fit_through_segmenter(args, plugin, source, target, out)
    else:
        plugin.fit(source, target, out, args.seed, progress=not args.quiet)
    print(f"{plugin.name} fitted on {len(source)} A and {len(target)} B images -> {out}")
    return 0


def _fit_through_segmenter(args, plugin, source: list[Path], target: list[Path], out: Path) -> None:
    """A task-aware fit (``Adapter.needs_segmenter``): the A images are a prepared dataset's (``--source`` one of
    its ``images/<split>`` folders) and their labels its annotations (``--labels``, the dataset folder); the
    frozen segmenter is ``--segmenter`` with its trained ``--model`` folder."""
    from harness.data.coco import image_records, present_splits

    if not (args.labels and args.segmenter and args.model):
        raise HarnessError(f"adapter '{plugin.name}' fits through a segmenter's training loss: give --labels "
                           "PREPARED_DIR (the A images' annotations), --segmenter NAME and --model MODEL_DIR")
    labels = {rec["path"]: rec["annotations"]
              for split in present_splits(Path(args.labels)) for rec in image_records(args.labels, split)}
    missing = [p for p in source if p.resolve() not in labels]
    if missing:
        raise HarnessError(f"{missing[0]}: not an image of the prepared dataset {args.labels} (give --source one "
                           "of its images/<split> folders): no labels for it")
    segmenter = _registry(args).create("segmenter", args.segmenter, {})
    plugin.fit_with_task(source, target, [labels[p.resolve()] for p in source], segmenter, Path(args.model), out,
                         args.seed, progress=not args.quiet)


def cmd_adapt(args) -> int:
    from harness.imageio import list_images, map_images
    from harness.stages import ADAPT_CHUNK

    plugin = _adapter(args)
    if plugin.trainable and not args.fit:
        raise HarnessError(f"adapter '{args.name}' must be fitted first: give --fit DIR (`harness train adapter`)")
    plugin.load(Path(args.fit) if args.fit else None)
    src, dst = Path(args.in_dir), Path(args.out_dir)
    paths = list_images(src)
    map_images([(path, dst / path.relative_to(src)) for path in paths], lambda ims, _: plugin.adapt_batch(ims),
               f"adapt {plugin.name}", chunk=ADAPT_CHUNK, progress=not args.quiet)
    print(f"{len(paths)} images adapted with {plugin.name} -> {dst}")
    return 0


def cmd_predict(args) -> int:
    from harness.data.coco import image_records

    reg = _registry(args)
    plugin = reg.create("segmenter", args.name,
                        _with_device(reg, "segmenter", args.name, _params(args.param), _check_device(args.device)))
    records = image_records(args.data, args.split)[: args.limit or None]
    root = Path(args.images) if args.images else Path(args.data)
    plugin.predict(Path(args.model), records, root, Path(args.out), progress=not args.quiet)
    print(f"{len(records)} images predicted -> {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from harness.evaluation import evaluate, summary_table

    rows = evaluate(args.gt, args.pred)
    print(json.dumps(rows, indent=1) if args.json else summary_table(rows))
    return 0


def cmd_run(args) -> int:
    from harness import config, matrix
    from harness.cache import Store

    reg = _registry(args)
    cfg = config.load(args.config, registry=reg)
    if args.limit is not None:
        cfg.limit = args.limit
    if args.amp:
        for seg in cfg.segmenters:
            if "amp" not in reg.get("segmenter", seg.name).params:
                raise HarnessError(f"--amp: segmenter '{seg.name}' has no mixed-precision inference")
            seg.params = {**seg.params, "amp": True}
    device = _check_device(args.device)
    ex_params = _params(args.executor_param)
    if args.workers is not None:
        ex_params["workers"] = args.workers
    if args.address is not None:
        ex_params["address"] = args.address
    executor = reg.create("executor", args.executor, ex_params)
    if args.only:
        done = matrix.compute(cfg, reg, set(args.only.split(",")), store=Store(args.cache), progress=not args.quiet,
                              executor=executor, device=device)
        print(f"{done['computed']} of {done['stages']} stages computed, {done['failed']} failed, "
              f"in {done['seconds']:.1f} s")
        return 1 if done["failed"] else 0
    out = Path(args.out) if args.out else matrix.default_run_dir(cfg)
    summary = matrix.run(cfg, reg, out=out, store=Store(args.cache), progress=not args.quiet, executor=executor,
                         device=device)
    c = summary["cells"]
    print(f"run {out}: {c['done']}/{c['total']} cells done, {c['failed']} failed; "
          f"{summary['computed']} stages computed in {summary['seconds']:.1f} s")
    if args.leaderboard:
        from harness.leaderboard import write

        print(f"leaderboard -> {write(out, args.leaderboard)}")
    return 1 if c["failed"] else 0


def cmd_infer(args) -> int:
    from harness.infer import infer

    reg = _registry(args)
    adapter_params = _params(args.adapter_param)
    if args.adapter_profile:
        adapter_params["profile"] = args.adapter_profile
    device = _check_device(args.device)
    if device and "device" in reg.get("adapter", args.adapter).params:
        adapter_params["device"] = device
    adapter = reg.create("adapter", args.adapter, adapter_params)
    segmenter = reg.create("segmenter", args.segmenter,
                           _with_device(reg, "segmenter", args.segmenter, _params(args.param), device))
    written = infer(args.images, adapter, segmenter, args.checkpoint, args.out, fit=args.fit,
                    score_thr=args.score_thr, progress=not args.quiet)
    print(f"{len(written)} image(s): {adapter.name} -> {segmenter.name}; overlays and COCO JSON -> {args.out}")
    return 0


def cmd_report(args) -> int:
    from harness.report.build import write_report

    out = write_report(args.run_dirs, out=args.out, leaderboard=args.leaderboard, resamples=args.resamples,
                       examples=args.examples, cache=args.cache, progress=not args.quiet)
    print(f"report -> {out}")
    return 0


def cmd_leaderboard(args) -> int:
    from harness.leaderboard import write

    print(f"leaderboard -> {write(args.run_dirs, args.out, args.title)}")
    return 0


def cmd_cache(args) -> int:
    from harness import cachetool

    if args.cache_cmd == "du":
        out = cachetool.du(args.run_dirs, cache=args.cache)
        text = cachetool.format_du(out)
    elif args.cache_cmd == "ls":
        out = cachetool.ls(args.run_dir, cache=args.cache)
        text = cachetool.format_ls(out)
    else:
        wait = lambda: print("harness: waiting for the running `harness run` to finish", file=sys.stderr)  # noqa: E731
        out = cachetool.gc(args.keep, cache=args.cache, dry_run=args.dry_run, wait=args.wait, on_wait=wait)
        text = cachetool.format_gc(out)
    print(json.dumps(out, indent=1) if args.json else text)
    return 0


DEVICE_HELP = "auto | cpu | cuda | cuda:N for plugins that run a network (never part of a cache key)"


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    p.add_argument("--strict", action="store_true", help="a plugin that fails to load is an error")
    p.add_argument("-p", dest="plugin_opts", action="append", metavar="[no:]NAME",
                   help="no:NAME blocks a plugin (as $HARNESS_BLOCK_PLUGINS); MODULE imports a plugin module")
    p.add_argument("--block-plugins", action="append", metavar="A,B", help="block these plugins (adds up)")
    p.add_argument("--allow-plugins", action="append", metavar="A,B",
                   help="load only these plugins (replaces $HARNESS_ALLOW_PLUGINS)")
    p.add_argument("--trace-hooks", action="store_true", help="print hook calls to stderr (as $HARNESS_TRACE=1)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("plugins", help="list installed plugins and load errors")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_plugins)
    s = s.add_subparsers(dest="plugins_cmd").add_parser("new", help="write a pip-installable plugin package")
    s.add_argument("kind", choices=["adapter", "segmenter", "degradation"])
    s.add_argument("name", help="plugin name: lower-case letters, digits, '-' or '_'")
    s.add_argument("--out", required=True, help="package folder to create (must not exist or be empty)")
    s.set_defaults(func=cmd_plugins_new)

    data = sub.add_parser("data", help="prepare or generate datasets").add_subparsers(dest="data_cmd", required=True)
    s = data.add_parser("prepare", help="convert a dataset into the harness layout (COCO JSON + PNG)")
    s.add_argument("format", choices=["neu-seg", "coco", "masks", "images"])
    s.add_argument("inputs", nargs="+", help="neu-seg: ROOT; coco: ROBOFLOW_ROOT or JSON IMAGES; masks: IMAGES MASKS; "
                                             "images: FOLDER (an unlabelled pool)")
    s.add_argument("--out", required=True)
    s.add_argument("--size", type=int, help="resize so the longer side is N px (annotations follow)")
    s.add_argument("--val-fraction", type=float, help="carved from train (default 0.1)")
    s.add_argument("--test-fraction", type=float,
                   help="masks/coco without a test split (default 0.2; 1 = all test: a test-only target)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--v-mean", help="domain-A brightness: HSV V mean per image (neu-seg default 108; 'none' = off)")
    s.add_argument("--classes", help="masks: class names for ids 1..K, comma-separated")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true", help="print the full dataset.json record, not the summary")
    s.set_defaults(func=cmd_data_prepare)
    s = data.add_parser("generate", help="generate a dataset")
    s.add_argument("kind", choices=["synthetic"])
    s.add_argument("--out", required=True)
    s.add_argument("--n-train", type=int, default=120)
    s.add_argument("--n-val", type=int, default=20)
    s.add_argument("--n-test", type=int, default=40)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true", help="print the full dataset.json record, not the summary")
    s.set_defaults(func=cmd_data_generate)

    s = sub.add_parser("degrade", help="apply a degradation plugin to a folder of images",
                       epilog="harness degrade estimate IMAGES_DIR --out twin.yaml: estimate a twin degradation "
                              "from unlabelled images (harness degrade estimate --help)")
    s.add_argument("name")
    s.add_argument("in_dir")
    s.add_argument("out_dir")
    s.add_argument("--severity", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--param", action="append", metavar="KEY=VALUE")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_degrade)
    # `harness degrade estimate ...` (main routes it here: `degrade` takes a plugin name first)
    s = sub.add_parser("degrade-estimate", help="(harness degrade estimate) estimate a twin degradation from images")
    s.prog = "harness degrade estimate"
    s.add_argument("images_dir", metavar="IMAGES_DIR", help="unlabelled target images (at least 8, all grey or all colour)")
    s.add_argument("--out", required=True, help="YAML file for the twin degradation entry")
    s.add_argument("--reference", help="source-domain train/val images the twin will degrade (default: synthetic)")
    s.add_argument("--reference-images", type=int, default=24, help="reference images the twin is simulated on")
    s.add_argument("--limit", type=int, help="use only the first N images of IMAGES_DIR")
    s.add_argument("--label", default="twin", help="label of the entry")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_degrade_estimate)

    train = sub.add_parser("train", help="train a plugin").add_subparsers(dest="train_cmd", required=True)
    s = train.add_parser("segmenter")
    s.add_argument("--device", help=DEVICE_HELP)
    s.add_argument("name")
    s.add_argument("--data", required=True, help="prepared dataset folder")
    s.add_argument("--profile", default="cpu")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--init", help="checkpoint path or URL to start from (e.g. COCO weights)")
    s.add_argument("--param", action="append", metavar="KEY=VALUE")
    s.set_defaults(func=cmd_train_segmenter)
    s = train.add_parser("adapter", help="fit a trainable adapter on domain-A and domain-B image folders")
    s.add_argument("--device", help=DEVICE_HELP)
    s.add_argument("name")
    s.add_argument("--source", required=True, help="domain-A (clean) images")
    s.add_argument("--target", help="domain-B images (paired adapters: same file names as their A originals)")
    s.add_argument("--profile", help="the adapter's profile parameter (e.g. cyclegan: seed, cpu)")
    s.add_argument("--out", required=True, help="fit folder; rerunning resumes from its checkpoint")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--param", action="append", metavar="KEY=VALUE")
    s.add_argument("--labels", help="task-aware adapters: a prepared dataset holding the A images' annotations")
    s.add_argument("--segmenter", help="task-aware adapters: the segmenter plugin whose training loss they fit through")
    s.add_argument("--model", help="task-aware adapters: that segmenter's trained model folder")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_train_adapter)

    s = sub.add_parser("adapt", help="apply an adapter to a folder of images")
    s.add_argument("--device", help=DEVICE_HELP)
    s.add_argument("name")
    s.add_argument("in_dir")
    s.add_argument("out_dir")
    s.add_argument("--fit", help="fit folder of a trainable adapter (`harness train adapter --out`)")
    s.add_argument("--profile", help="the adapter's profile parameter")
    s.add_argument("--param", action="append", metavar="KEY=VALUE")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_adapt)

    s = sub.add_parser("predict", help="predict a split with a trained segmenter -> COCO results JSON")
    s.add_argument("--device", help=DEVICE_HELP)
    s.add_argument("name")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--images", help="folder mirroring the dataset's file names (e.g. degraded images)")
    s.add_argument("--limit", type=int)
    s.add_argument("--out", required=True)
    s.add_argument("--param", action="append", metavar="KEY=VALUE")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("evaluate", help="COCO metrics of predictions against ground truth")
    s.add_argument("gt")
    s.add_argument("pred")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("run", help="run a matrix config (cached, resumable)")
    s.add_argument("config")
    s.add_argument("--out", help="run folder (default runs/<name>-<config hash>)")
    s.add_argument("--limit", type=int, help="evaluate only the first N images")
    s.add_argument("--cache", help="stage cache (default $HARNESS_CACHE or ~/.cache/harness/stages)")
    s.add_argument("--leaderboard", help="also write the leaderboard markdown here")
    s.add_argument("--only", metavar="KIND,...",
                   help="compute only stages of these kinds and their inputs (e.g. fit, train), no run folder")
    s.add_argument("--executor", default="local", help="where stages run: local (default) or ray (harness[ray])")
    s.add_argument("--workers", type=int, help="local executor: worker processes (0 = one per core)")
    s.add_argument("--address", help="ray executor: cluster address (default: start a local Ray instance)")
    s.add_argument("--executor-param", action="append", metavar="KEY=VALUE")
    s.add_argument("--device", help=DEVICE_HELP)
    s.add_argument("--amp", action="store_true",
                   help="float16 inference on GPU for the segmenters (a separate cache key: outputs change slightly)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("infer", help="image -> adapter -> segmenter: overlay PNG and COCO JSON per image")
    s.add_argument("--device", help=DEVICE_HELP)
    s.add_argument("images", nargs="+", metavar="IMAGE")
    s.add_argument("--segmenter", required=True, help="segmenter plugin that trained the checkpoint")
    s.add_argument("--checkpoint", required=True, help="model folder training wrote (or its model.pth)")
    s.add_argument("--adapter", default="identity")
    s.add_argument("--fit", help="fit folder of a trainable adapter")
    s.add_argument("--adapter-profile", help="the adapter's profile parameter (e.g. cyclegan: cpu)")
    s.add_argument("--adapter-param", action="append", metavar="KEY=VALUE")
    s.add_argument("--param", action="append", metavar="KEY=VALUE", help="segmenter parameter")
    s.add_argument("--score-thr", type=float, default=0.5, help="lowest score drawn on the overlay (JSON keeps all)")
    s.add_argument("--out", required=True)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_infer)

    s = sub.add_parser("report", help="significance, plots and leaderboard of run folders")
    s.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    s.add_argument("--out", help="folder for significance.csv and plots/ (default: the first RUN_DIR)")
    s.add_argument("--leaderboard", help="leaderboard markdown (default OUT/leaderboard.md)")
    s.add_argument("--resamples", type=int, default=1000, help="paired bootstrap resamples over test images")
    s.add_argument("--examples", type=int, default=4, help="images per qualitative and failure panel")
    s.add_argument("--cache", help="stage cache the run used (default: the one run.json names)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("leaderboard", help="render run folders as leaderboard markdown (several: side by side)")
    s.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    s.add_argument("--out", required=True)
    s.add_argument("--title")
    s.set_defaults(func=cmd_leaderboard)

    cache = sub.add_parser("cache", help="what the stage cache holds and what run folders need; prune the rest")
    cache = cache.add_subparsers(dest="cache_cmd", required=True)
    cache_help = "stage cache (default: the one the run folders' run.json name, else $HARNESS_CACHE or ~/.cache/...)"
    s = cache.add_parser("du", help="size and count by stage kind, and by run folder when given run folders")
    s.add_argument("run_dirs", nargs="*", metavar="RUN_DIR")
    s = cache.add_parser("ls", help="every stage a run folder needs: kind, key, present or missing, size")
    s.add_argument("run_dir", metavar="RUN_DIR")
    s = cache.add_parser("gc", help="delete every stage no kept run needs, and .partial folders older than a day")
    s.add_argument("--keep", nargs="+", required=True, metavar="RUN_DIR", help="run folders whose stages stay")
    s.add_argument("--dry-run", action="store_true", help="delete nothing; print what would be freed")
    s.add_argument("--wait", action="store_true", help="wait for running `harness run` commands instead of refusing")
    for s in cache.choices.values():
        s.add_argument("--cache", help=cache_help)
        s.add_argument("--json", action="store_true")
        s.set_defaults(func=cmd_cache)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for i in range(len(argv) - 1):
        if argv[i] == "degrade" and argv[i + 1] == "estimate":
            argv[i:i + 2] = ["degrade-estimate"]
            break
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HarnessError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; finished stages are kept in the cache, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
