"""The command line: ``python -m feasible run|sweep|status|list|bench`` (see ``--help`` of each)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Sequence

from feasible.experiment import SCALES, Config, record_path
from feasible.unlearn import PROTOCOLS
from feasible.paths import NotWritableError
from feasible.train import SCHEDULES, TrainConfig

#: Metric columns of the table ``run`` prints.
COLUMNS: tuple[str, ...] = ("UA", "RA", "TA", "MIA", "avg_gap", "rUA", "FID")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _kind(annotation: str) -> type | None:
    """The argparse type of a dataclass field from its (string) annotation."""
    base = str(annotation).split("|")[0].strip()
    return {"bool": bool, "int": int, "float": float, "str": str}.get(base)


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                skip: Sequence[str] = ()) -> None:
    """One option per field of the dataclass ``cls``; the default is left to the class."""
    for f in dataclasses.fields(cls):
        kind = _kind(f.type)
        if f.name in skip or kind is None:
            continue
        option = _option(prefix + f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"(default: {default!r}, or the scale's preset)" if prefix else \
            f"(default: {default!r})"
        if not prefix and default is None and f.name in PROTOCOLS["harness"]:
            help_text = "(default: the protocol's, see 'python -m feasible list')"
        if kind is bool:
            parser.add_argument(option, dest=prefix + f.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(option, dest=prefix + f.name, type=kind, default=None,
                                help=help_text, metavar=kind.__name__.upper())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m feasible``."""
    parser = argparse.ArgumentParser(
        prog="python -m feasible",
        description="Feasible updates for first-order unlearning: run one configuration, a "
                    "sweep over a grid, or list what is available.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one configuration and print its final metrics",
                         description="Run one configuration (every Config field is an option; "
                                     "--train-* override the scale's training recipe).")
    _add_fields(run, Config, skip=("train",))
    _add_fields(run, TrainConfig, prefix="train_", skip=("model",))
    run.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    run.add_argument("--force", action="store_true", help="recompute an existing record")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress report (default: a bar per phase on a terminal, else one "
                          "line per phase on stderr)")

    sweep = sub.add_parser("sweep", help="run every configuration of a grid file",
                           description="Run a grid's configurations that have no finished record "
                                       "yet and that no other process is computing.")
    sweep.add_argument("grid", help="a grid JSON file, e.g. grids/smoke.json")
    sweep.add_argument("--dry-run", action="store_true", help="list what would run; run nothing")
    sweep.add_argument("--limit", type=int, default=None, metavar="N",
                       help="compute at most N configurations")
    sweep.add_argument("--shard", default=None, metavar="I/N",
                       help="only configurations I, I+N, I+2N, ... of the grid (0-based I)")
    sweep.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    sweep.add_argument("--jobs", default="1", metavar="N",
                       help="worker processes computing configurations side by side, torch "
                            "threads shared out among them (default: 1, in this process)")
    sweep.add_argument("--no-progress", action="store_true",
                       help="no progress report (default: a bar of runs and one per phase of each "
                            "run and worker on a terminal, else one line per run and per phase)")

    cluster = sweep.add_argument_group(
        "cluster", "--launcher slurm submits the configurations without a record as one SLURM "
                   "job array through submitit (each task runs --chunk of them); the other "
                   "options of this group need it")
    cluster.add_argument("--launcher", default="local", choices=("local", "slurm"),
                         help="where configurations run (default: local, this machine)")
    cluster.add_argument("--partition", default=None, help="SLURM partition (default: the "
                                                            "cluster's)")
    cluster.add_argument("--gpus-per-task", default=None, type=int, metavar="N",
                         help="GPUs per array task (default: 0)")
    cluster.add_argument("--cpus-per-task", default=None, type=int, metavar="N",
                         help="CPUs per array task, its torch threads (default: 1)")
    cluster.add_argument("--time", default=None, type=int, metavar="MINUTES",
                         help="time limit of each task, in minutes (default: 60)")
    cluster.add_argument("--array-parallelism", default=None, type=int, metavar="N",
                         help="tasks running at once at most (default: 64)")
    cluster.add_argument("--chunk", default=None, type=int, metavar="N",
                         help="configurations per task, one after the other (default: 1)")
    cluster.add_argument("--sbatch", action="append", default=None, metavar="KEY=VALUE",
                         help="another sbatch option, e.g. account=lab or exclusive (repeatable)")
    cluster.add_argument("--log-folder", default=None, metavar="DIR",
                         help="submitit's scripts and task logs, and the ledger of submissions "
                              "that 'status' reads (default: <FEASIBLE_CACHE>/slurm)")

    status = sub.add_parser("status", help="done / running / queued / failed / missing, per "
                                           "configuration of a grid",
                            description="Where each configuration of a grid stands: its record, "
                                        "a live claim, the SLURM state of the task it was "
                                        "submitted in, its failure record, and the task's log.")
    status.add_argument("grid", help="a grid JSON file, e.g. grids/smoke.json")
    status.add_argument("--shard", default=None, metavar="I/N",
                        help="only configurations I, I+N, I+2N, ... of the grid (0-based I)")
    status.add_argument("--log-folder", default=None, metavar="DIR",
                        help="the launcher's log folder (default: <FEASIBLE_CACHE>/slurm)")

    sub.add_parser("list", help="datasets, models, methods, add-ons and scales")

    bench = sub.add_parser("bench", help="what each add-on costs: seconds and peak memory per "
                                         "unlearning step as ratios to the plain step, measured "
                                         "side by side; an epoch; an evaluation")
    bench.add_argument("--models", default="small_cnn,resnet18,vgg16_bn", metavar="NAMES",
                       help="comma-separated model names (default: small_cnn,resnet18,vgg16_bn)")
    bench.add_argument("--model", default=None, help="one model (overrides --models)")
    bench.add_argument("--batch-sizes", default="128,256", metavar="INTS",
                       help="comma-separated batch sizes (default: 128,256)")
    bench.add_argument("--batch-size", type=int, default=None, metavar="INT",
                       help="one batch size (overrides --batch-sizes)")
    bench.add_argument("--method", default="ngplus", help="the base method (default: ngplus)")
    bench.add_argument("--addons", default=None, metavar="NAMES",
                       help="comma-separated add-ons (default: all)")
    bench.add_argument("--noises", default="ema,microbatch,per_sample", metavar="NAMES",
                       help="noise models of PROB, focus and focus_opt (per_sample only where "
                            "defined; default: all)")
    bench.add_argument("--rounds", type=int, default=5, metavar="INT",
                       help="rounds of alternation, one step per variant each (default: 5)")
    bench.add_argument("--k", type=int, default=8, metavar="INT", help="micro-batches (default: 8)")
    bench.add_argument("--width", action="append", default=[], metavar="MODEL=INT",
                       help="a model's width (repeatable; on the CPU resnet18 and vgg16_bn "
                            "default to 16)")
    bench.add_argument("--threads", type=int, default=None, metavar="INT",
                       help="torch threads (default: torch's)")
    bench.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    bench.add_argument("--no-epoch", action="store_true", help="skip the epoch measurement")
    bench.add_argument("--no-eval", action="store_true", help="skip the evaluation measurement")
    bench.add_argument("--out", default=None, metavar="PATH",
                       help="write the JSON here; 'auto': results/bench/<host kind>.json "
                            "(cpu-<CPU model>-<N>cores or cuda-<GPU>)")
    return parser


def _config_from_args(args: argparse.Namespace) -> Config:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
              if getattr(args, f.name, None) is not None}
    if "method" not in values:
        raise ValueError("The '--method' option is required; run 'python -m feasible list' for "
                         "the methods.")
    config = Config(**values)
    overrides = {f.name: getattr(args, "train_" + f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, "train_" + f.name, None) is not None}
    if overrides:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train_config(),
                                                                        **overrides))
    return config


def _table(record: dict[str, Any]) -> str:
    rows = [(name, dict(record[name]["metrics"], avg_gap=record[name].get("avg_gap")))
            for name in ("original", "retrained")]
    rows.append(("unlearned", record["final"]))
    lines = [f"{'':10s}" + "".join(f"{c:>9s}" for c in COLUMNS)]
    for name, metrics in rows:
        cells = []
        for c in COLUMNS:
            v = metrics.get(c)
            cells.append(f"{'-':>9s}" if v is None else f"{v:9.2f}")
        lines.append(f"{name:10s}" + "".join(cells))
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    from feasible import progress
    from feasible.experiment import run
    from feasible.sweep import label

    config = _config_from_args(args)
    with progress.labelled(label(config)):
        record = run(config, device=args.device, force=args.force)
    print(f"{config.dataset} / {config.model} / {config.scenario} / {config.method} + "
          f"{config.addon} (scale {config.scale}, seed {config.seed}); data: "
          f"{record['data']['source']}")
    print(_table(record))
    final = record["final"]
    print(f"epochs to reach the retrained UA (within 1 point): "
          f"{final.get('epochs_to_reach_retrain_ua')}; diverged at epoch: "
          f"{record['diverged_epoch']}; unlearning time: {final.get('unlearn_wall_time', 0):.1f} s")
    print(f"record: {record_path(config)}")
    return 0


#: The options of ``sweep`` that only the slurm launcher reads, by their ``SlurmOptions`` field.
CLUSTER_OPTIONS: dict[str, str] = {
    "partition": "partition", "gpus_per_task": "gpus_per_task", "cpus_per_task": "cpus_per_task",
    "time": "time_min", "array_parallelism": "array_parallelism", "chunk": "chunk",
    "sbatch": "sbatch", "log_folder": "log_folder"}


def _grid_configs(args: argparse.Namespace) -> list[Config]:
    """The configurations of ``args.grid``, only those of ``args.shard`` when given."""
    from feasible.sweep import expand, load_grid

    grid = load_grid(args.grid)
    try:
        configs = expand(grid)
    except ValueError as err:
        raise ValueError(f"The grid file {args.grid}: {err}") from None
    if args.shard is not None:
        try:
            index, count = (int(v) for v in args.shard.split("/"))
            assert 0 <= index < count
        except (ValueError, AssertionError):
            raise ValueError(f"The '--shard' option must be I/N with 0 <= I < N. "
                             f"Got {args.shard!r} instead.") from None
        configs = configs[index::count]
    return configs


def _slurm_options(args: argparse.Namespace) -> Any:
    """The ``SlurmOptions`` of the cluster options given (``None`` for the local launcher).

    Raises:
        ValueError: a cluster option without ``--launcher slurm``, ``--jobs`` with it, or a bad
            value (named as its option).
    """
    given = {field: getattr(args, option) for option, field in CLUSTER_OPTIONS.items()
             if getattr(args, option) is not None}
    if args.launcher != "slurm":
        if given:
            name = next(o for o, f in CLUSTER_OPTIONS.items() if f in given)
            raise ValueError(f"The '--{name.replace('_', '-')}' option needs '--launcher "
                             f"slurm' (the local runner computes on this machine).")
        return None
    if args.jobs != "1":
        raise ValueError(f"The '--jobs' option is the local runner's; with '--launcher slurm' "
                         f"use --array-parallelism and --chunk. Got --jobs {args.jobs!r}.")
    from feasible.launch import SlurmOptions

    try:
        return SlurmOptions(**given)
    except ValueError as err:
        message = str(err)
        for option, field in CLUSTER_OPTIONS.items():
            message = message.replace(f"'{field}' option of the slurm launcher",
                                      f"'--{option.replace('_', '-')}' option")
        raise ValueError(message) from None


def _sweep(args: argparse.Namespace) -> int:
    from feasible.experiment import claim_owner, read_record
    from feasible.sweep import label, sweep

    if args.limit is not None and args.limit < 0:
        raise ValueError(f"The '--limit' option must be an int >= 0. Got {args.limit} instead.")
    options = _slurm_options(args)
    jobs = _jobs(args.jobs)
    configs = _grid_configs(args)
    if options is not None:
        from feasible.launch import submit

        try:
            submission = submit(configs, options, device=args.device, limit=args.limit,
                                dry_run=args.dry_run)
        except RuntimeError as err:
            print(f"python -m feasible sweep: error: {err}", file=sys.stderr)
            return 2
        for line in submission.lines():
            print(line)
        return 0
    summary = sweep(configs, device=args.device, limit=args.limit, dry_run=args.dry_run,
                    progress=not args.no_progress, jobs=jobs)
    if args.dry_run:
        for config in configs:
            path = record_path(config)
            record, problem = read_record(path)
            state = ("recorded" if record is not None else "broken" if problem is not None
                     else "running" if claim_owner(path) is not None else "to run")
            print(f"{state:9s} {path.name}  {label(config)}")
    for line in summary.lines():
        print(line)
    return 1 if summary.failed else 0


def _status(args: argparse.Namespace) -> int:
    from feasible.launch import status, status_lines

    for line in status_lines(status(_grid_configs(args), args.log_folder)):
        print(line)
    return 0


def _jobs(value: str) -> int:
    """The value of ``--jobs``: an int >= 1."""
    from feasible._validate import positive_int

    jobs = positive_int(value)
    if jobs is None:
        raise ValueError(f"The '--jobs' option must be an int >= 1 (worker processes). Got "
                         f"{value!r} instead.")
    return jobs


def _list(args: argparse.Namespace) -> int:
    del args
    from feasible.data import DATASETS
    from feasible.masks import ADDONS
    from feasible.methods import METHODS
    from feasible.models import MODELS

    print("datasets:", ", ".join(DATASETS))
    print("models:  ", ", ".join(MODELS))
    print("methods:")
    for name, spec in METHODS.items():
        print(f"  {name:16s} lr {spec.lr:<6g} {spec.description}")
    print("add-ons: ", ", ".join(ADDONS))
    print("protocols (--protocol; explicit options win):")
    for name, preset in PROTOCOLS.items():
        print(f"  {name:8s} " + ", ".join(f"{k} {'the method default' if v is None else v}"
                                          for k, v in preset.items()))
    print("schedules:", ", ".join(SCHEDULES))
    print("scales:")
    for name, scale in SCALES.items():
        print(f"  {name:6s} {scale.description}; datasets {', '.join(scale.datasets)}; "
              f"models {', '.join(scale.models)}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from feasible.bench import format_table, run, write_json

    def names(text: str) -> list[str]:
        return [t.strip() for t in text.split(",") if t.strip()]

    try:
        sizes = [args.batch_size] if args.batch_size is not None else [
            int(t) for t in names(args.batch_sizes)]
    except ValueError:
        raise ValueError(f"--batch-sizes must be comma-separated ints. Got "
                         f"{args.batch_sizes!r} instead.") from None
    widths = {}
    for item in args.width:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise ValueError(f"--width must be MODEL=INT (e.g. resnet18=16). Got {item!r} "
                             "instead.")
        widths[name] = int(value)
    kwargs = {"method": args.method, "noises": names(args.noises), "rounds": args.rounds,
              "k": args.k, "widths": widths, "device": args.device, "threads": args.threads,
              "memory": not args.no_memory, "epoch": not args.no_epoch,
              "evaluation": not args.no_eval, "out_path": args.out,
              "log": lambda line: print(line, file=sys.stderr, flush=True)}
    if args.addons is not None:
        kwargs["addons"] = names(args.addons)
    # a bad option raises ValueError before anything runs: main() prints it and returns 2
    result = run([args.model] if args.model else names(args.models), sizes, **kwargs)
    print(format_table(result))
    if args.out:
        print(f"written: {write_json(result, args.out)}")  # (after each model too)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command.

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 when a sweep had failures, 2 for a bad argument (an
        invalid value, a missing or malformed grid file, an unknown or unavailable device) or a
        results folder that cannot be written, 130 when interrupted (Ctrl-C).

    ``run`` and ``sweep`` report their progress on stderr (``feasible.progress``) unless given
    ``--no-progress`` or ``FEASIBLE_PROGRESS=0``; the setting is restored on return.
    """
    from feasible import progress

    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"run": _run, "sweep": _sweep, "status": _status, "list": _list,
               "bench": _bench}[args.command]
    previous = progress.enable(args.command in ("run", "sweep") and not args.no_progress)
    try:
        progress.enabled()  # a bad FEASIBLE_PROGRESS is an error before any work
        return command(args)
    except (ValueError, FileNotFoundError, NotWritableError) as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted; finished records are kept, run the "
              f"same command again to compute the rest.", file=sys.stderr)
        return 130
    finally:
        progress.enable(previous)


if __name__ == "__main__":
    sys.exit(main())
