"""The records of a grid as tables, curves and verdicts on the paper's claims (the Results pages).

Small pure functions over result records (``feasible.experiment.run``), for the book's
Results, Claims, Ablations and Reproducibility pages: :func:`load_grid_records` finds a grid's
records and says which are missing (:func:`load_subgrids`: each sub-grid apart, e.g. one per
ablation); :func:`runs_table` makes one tidy row per run, :func:`summarize` the mean
and standard deviation over seeds, :func:`epoch_curves` the per-epoch values of the figures;
:func:`claim_comparisons` and :func:`claim_verdicts` test the paper's claims by one rule
(:func:`verdict`, stated below and on the Claims page).

The verdict rule. A claim compares a *treatment* (a base method with one of the paper's
add-ons) with a *baseline* (the same method, learning rate and scenario without add-on; for
"better than SalUn and NGPlus", SalUn and NGPlus), seed by seed: ``d_s`` is the improvement in
seed ``s`` in the claimed direction (lower MIA member rate, lower ``|rUA|``, fewer epochs to the
retrained model's UA, an unlearning-time ratio under 2), over the ``n`` seeds where both runs
finished without diverging. With ``d`` their mean, ``SE = sd(d_s) / sqrt(n)`` and the threshold
``t = max(2 SE, spread)``, where ``spread`` is the member-subset spread of the MIA (the
root-mean-square over the paired runs of each run's standard deviation of the member rate over
the attack's member sets) for MIA claims and 0 otherwise, the claim **holds** when ``d > t``,
**does not hold** when ``d <= -t`` (an improvement of exactly 0 everywhere does not hold), and
is **mixed** otherwise; with fewer than two seeds the standard error is unknown and the
comparison is mixed. Over its comparisons with at least two seeds, a claim holds for a protocol
and scale when more than half hold and none does not hold, does not hold when more than half do
not hold and none holds, and is mixed otherwise (not tested while no comparison has two
seeds).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from feasible.experiment import Config, config_hash, read_record
from feasible.paths import ROOT, results_dir
from feasible.sweep import AXES, META_KEYS, expand, load_grid

__all__ = [
    "ABLATION_PANELS", "ADDON_NAMES", "AUTHORS_TABLE", "AUTHORS_TABLE_SOURCE", "CLAIMS",
    "DATASET_NAMES", "EPOCH_PANELS", "FAIR_POINTS", "FIG5_ADDONS", "GridRecords", "GROUP",
    "MANAGEABLE_TIME_RATIO", "METHOD_NAMES", "PALETTE", "PAPER_ADDONS", "PROTOCOL_NAMES",
    "RESULT_COLUMNS", "RESULT_VIEWS", "SUMMARY_METRICS", "VERDICTS", "ablation_display",
    "ablation_table", "authors_comparison", "claim_comparisons", "claim_evidence", "claim_ties",
    "claim_verdicts", "convergence_table", "data_sources", "departures_table", "diverged_table",
    "environment_table", "epoch_curves", "fair_points", "fair_table", "format_mean_sd",
    "grid_configs", "load_grid_records", "load_grids", "load_subgrids", "mia_agreement",
    "mia_closeness", "mia_spread_table", "plot_ablation", "plot_claim", "plot_comparisons",
    "plot_epochs", "plot_fair", "plot_gap_dots", "plot_lr_sweep", "plot_mia_closeness",
    "plot_stacked", "plot_times", "plot_verdict_grid", "ranking", "read_records",
    "references_table", "rerun_table", "rerun_view", "results_table", "run_row", "runs_table",
    "show", "summarize", "timing_table", "verdict", "verdict_markdown", "verdict_summary",
    "verdict_table", "where",
]

#: The add-ons of the paper (AND, PROB, F) and of the authors' code (OPT, focus + OPT) that the
#: claims are about; SalUn's masks are baselines.
PAPER_ADDONS: tuple[str, ...] = ("and", "prob", "focus", "opt", "focus_opt")
#: The add-ons of the paper's Fig. 5, in its order; SalUn is the static mask of the literature's
#: protocol or the authors' per-step mask, whichever the protocol ran.
FIG5_ADDONS: tuple[str, ...] = ("none", "salun", "salun_step", "and", "prob", "focus")
#: How pages name add-ons, protocols and verdicts.
ADDON_NAMES: dict[str, str] = {"none": "none", "salun": "SalUn",
                               "salun_step": "SalUn (per step)", "and": "AND", "prob": "PROB",
                               "focus": "F", "opt": "OPT", "focus_opt": "F + OPT"}
PROTOCOL_NAMES: dict[str, str] = {"authors": "authors' protocol",
                                  "authors_tuned": "authors' protocol, tuned rate",
                                  "harness": "literature's protocol"}
METHOD_NAMES: dict[str, str] = {"ngplus_authors": "NGPlus", "srl_authors": "SRL",
                                "ngplus": "NGPlus", "srl": "SRL", "ft": "FT", "ga": "GA",
                                "rl": "RL", "l1_sparse": "l1-sparse", "eupmu": "EUPMU",
                                "eupmu_implicit": "EUPMU (implicit)",
                                "minnorm_og": "MinNorm-OG"}
DATASET_NAMES: dict[str, str] = {"fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                                 "svhn": "SVHN", "digits": "digits"}
#: The three verdicts of a comparison or a claim.
VERDICTS: tuple[str, ...] = ("holds", "does not hold", "mixed")
#: Okabe-Ito colours (colour-blind safe), one per add-on.
PALETTE: dict[str, str] = {"none": "#000000", "salun": "#E69F00", "salun_step": "#E69F00",
                           "and": "#56B4E9", "prob": "#009E73", "focus": "#D55E00",
                           "opt": "#0072B2", "focus_opt": "#CC79A7"}
#: The threshold of "manageable run time", this project's (the paper gives no number). An
#: add-on's unlearning time is manageable at most this many times the base method's.
MANAGEABLE_TIME_RATIO: float = 2.0

#: The claims in the order of the Claims page, each key with its statement.
CLAIMS: dict[str, str] = {
    "lower_mia": "lower MIA (share of the forget set the attack calls member)",
    "better_rua": "better relative UA (rUA closer to 0)",
    "faster": "faster convergence to the retrained model's UA",
    "time": f"manageable run time (at most {MANAGEABLE_TIME_RATIO:g}x the base method's)",
    "beats_baselines": "better than SalUn and NGPlus (MIA, rUA, epochs to the target UA)",
}

#: Where the authors' public numbers are, ``table.txt`` of owl1996/UnlearningFocusVector
#: (dataset and model not stated; mean ± sd over their seeds). ``UA`` there is the accuracy *on*
#: D_f, ``rUA``
#: ``Acc_f(model) - Acc_f(retrained)`` in points, ``MIA_entropy`` the share of D_f the SVM
#: attack on the entropy feature predicts member (a fraction; here in percent), ``RTE`` seconds
#: per epoch.
AUTHORS_TABLE_SOURCE: str = "https://github.com/owl1996/UnlearningFocusVector/blob/main/table.txt"
#: The authors' public numbers, one row per setting (from :data:`AUTHORS_TABLE_SOURCE`).
AUTHORS_TABLE: tuple[dict[str, Any], ...] = (
    {"method": "ngplus", "addon": "opt", "RTE": 3.12, "FID": 93.82, "rUA": 2.23,
     "forget_acc": 97.21, "RA": 99.8, "TA": 94.43, "MIA_entropy": 95.0},
    {"method": "ngplus", "addon": "focus_opt", "RTE": 4.47, "FID": 91.62, "rUA": -0.76,
     "forget_acc": 94.11, "RA": 99.53, "TA": 93.13, "MIA_entropy": 87.0},
    {"method": "srl", "addon": "focus_opt", "RTE": 4.65, "FID": 90.06, "rUA": -1.73,
     "forget_acc": 93.07, "RA": 99.79, "TA": 94.06, "MIA_entropy": 14.0},
    {"method": "srl", "addon": "opt", "RTE": 5.1, "FID": 92.34, "rUA": 0.76,
     "forget_acc": 95.73, "RA": 99.83, "TA": 94.24, "MIA_entropy": 24.0},
)

#: The configuration fields that belong to the add-on (left out when looking for its baseline).
_ADDON_FIELDS: tuple[str, ...] = ("addon", "p", "renorm", "focus_variant", "saliency_fraction",
                                  "noise", "k", "mask_mode")
#: The fields that name one setting of a run, seeds aside.
_NOT_SETTING: tuple[str, ...] = ("seed", "data_root")


@dataclass
class GridRecords:
    """A grid's configurations and what the results folder holds for them.

    Attributes:
        name: the grid file's stem, e.g. ``"cpu-authors"``.
        description: the grid's description.
        configs: every configuration of the grid, in grid order.
        records: the finished records, in grid order.
        missing: the configurations without a finished record.
        failed: of ``missing``, those whose last run failed (``results/<scale>/failed/``).
        problems: record files that are there but not finished: ``(file name, problem)``.
        varied: the configuration fields the grid's axes set whose values differ among its
            configurations, in the file's order (e.g. ``["addon", "optimizer", "lr"]``).
    """

    name: str
    description: str
    configs: list[Config]
    records: list[dict[str, Any]] = field(default_factory=list)
    missing: list[Config] = field(default_factory=list)
    failed: list[Config] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    varied: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``"n of N configurations recorded"``, with the failed and unfinished ones if any."""
        text = f"{len(self.records)} of {len(self.configs)} configurations recorded"
        extra = []
        if self.failed:
            extra.append(f"{len(self.failed)} failed")
        if self.problems:
            extra.append(f"{len(self.problems)} unfinished files")
        return text + (f" ({', '.join(extra)})" if extra else "")


def grid_configs(grid: Mapping[str, Any]) -> list[Config]:
    """The configurations of a parsed grid, including one of sub-grids.

    The sweep's own expansion (``feasible.sweep.expand``): sub-grids under ``"grids"`` are
    expanded with the top-level ``fixed`` merged under their own, in grid order, duplicates
    (same hash) dropped.

    Raises:
        ValueError: a grid or sub-grid that ``feasible.sweep.expand`` refuses.
    """
    return expand(grid)


def _axis_fields(grid: Mapping[str, Any]) -> list[str]:
    """The configuration fields that a grid's axes (and its sub-grids') set, in file order."""
    names: list[str] = []
    for part in grid.get("grids", [grid]):
        for key, values in part.items():
            if key in META_KEYS:
                continue
            for value in values:
                entry = value if isinstance(value, Mapping) else {AXES.get(key, key): value}
                names += [name for name in entry if name not in names]
    return names


def _varied(configs: Sequence[Config], names: Sequence[str]) -> list[str]:
    """Of ``names``, the fields whose values differ among ``configs``."""
    dicts = [c.to_dict() for c in configs]
    return [n for n in names
            if len({json.dumps(d.get(n), sort_keys=True, default=str) for d in dicts}) > 1]


def _grid_file(path: str | Path) -> Path:
    path = Path(path)
    return ROOT / path if not path.is_absolute() and not path.exists() else path


def _read_records(out: GridRecords, folder: Path) -> GridRecords:
    """Fill ``out``'s records, missing, failed and problems from the results ``folder``."""
    for config in out.configs:
        file = folder / config.scale / f"{config_hash(config)}.json"
        record, problem = read_record(file)
        if record is not None:
            out.records.append(record)
            continue
        out.missing.append(config)
        if problem is not None:
            out.problems.append((file.name, problem))
        if (folder / config.scale / "failed" / file.name).exists():
            out.failed.append(config)
    return out


def load_grid_records(path: str | Path, results: str | Path | None = None) -> GridRecords:
    """Read the records of a grid file and list the configurations still missing.

    Args:
        path: a grid JSON file (relative paths from the repository root).
        results: the results folder (``None``: ``feasible.paths.results_dir()``).

    Returns:
        The grid's :class:`GridRecords`.

    Raises:
        ValueError: the grid file is missing or not a grid.
    """
    path = _grid_file(path)
    grid = load_grid(path)
    folder = Path(results) if results is not None else results_dir()
    configs = grid_configs(grid)
    out = GridRecords(path.stem, grid.get("description", ""), configs,
                      varied=_varied(configs, _axis_fields(grid)))
    return _read_records(out, folder)


def load_subgrids(path: str | Path, results: str | Path | None = None) -> list[GridRecords]:
    """Each sub-grid of a grid file as its own :class:`GridRecords` (e.g. one per ablation).

    A sub-grid's configurations are those of its axes over the grid's ``fixed``; one that
    several sub-grids share (an ablation's default setting, say) is in each of them. Sub-grid
    ``n`` (from 1) is named ``"<stem>/<n>"`` and keeps its own ``description`` (``""`` when it
    has none); a grid without sub-grids gives one, as :func:`load_grid_records` reads it.

    Args:
        path: a grid JSON file (relative paths from the repository root).
        results: the results folder (``None``: ``feasible.paths.results_dir()``).

    Raises:
        ValueError: the grid file is missing or not a grid.
    """
    path = _grid_file(path)
    grid = load_grid(path)
    if "grids" not in grid:
        return [load_grid_records(path, results)]
    folder = Path(results) if results is not None else results_dir()
    out = []
    for number, part in enumerate(grid["grids"], start=1):
        sub = {**{k: v for k, v in part.items() if k != "description"},
               "fixed": {**grid.get("fixed", {}), **part.get("fixed", {})}}
        configs = grid_configs(sub)
        out.append(_read_records(GridRecords(f"{path.stem}/{number}",
                                             part.get("description", ""), configs,
                                             varied=_varied(configs, _axis_fields(sub))),
                                 folder))
    return out


def load_grids(paths: Sequence[str | Path], scales: Sequence[str] | str = ("cpu",),
               results: str | Path | None = None,
               ) -> tuple[dict[str, GridRecords], list[dict[str, Any]], pd.DataFrame]:
    """Several grids' records at once, each record once.

    Args:
        paths: grid files (:func:`load_grid_records`).
        scales: the scales kept (a name or several).
        results: the results folder (``None``: ``feasible.paths.results_dir()``).

    Returns:
        ``(grids, records, runs)``: each file's :class:`GridRecords` by its path as given; the
        finished records of the kept scales, each once, in grid order; and their
        :func:`runs_table`, with a ``grid`` column naming the first grid that holds each.
    """
    scales = [scales] if isinstance(scales, str) else list(scales)
    grids = {str(path): load_grid_records(path, results) for path in paths}
    records, grid_of, seen = [], [], set()
    for grid in grids.values():
        for record in grid.records:
            key = record.get("hash") or id(record)
            if record["config"].get("scale") in scales and key not in seen:
                seen.add(key)
                records.append(record)
                grid_of.append(grid.name)
    runs = runs_table(records)
    runs.insert(0, "grid", pd.Series(grid_of, dtype=object))
    return grids, records, runs


def rate_pilot(runs: pd.DataFrame, pilot_grid: str) -> pd.Series:
    """Which of ``runs`` (a :func:`load_grids` table) only chose a learning rate: the runs that
    ``pilot_grid`` holds at a rate of its own (its renorm variant aside).

    The fair comparison chooses each add-on's rate on seed 0 and reports it on seeds 1-3
    (``tools/choose_lr.py fair``); a seed-0 run at the chosen rate would otherwise join them and
    bring the choice's luck into the mean. These runs are shown as the choice, not counted.
    """
    return (runs.grid == pilot_grid) & ~runs.renorm.astype(bool)


FAIR_POINTS: tuple[str, ...] = ("base rate", "renorm", "own rate")
"""The fair comparison's three points, in the order its table and figure show them."""


def fair_points(runs: pd.DataFrame, chosen: Mapping[tuple[str, str], float],
                base_rates: Mapping[str, float], reported_seeds: Sequence[int] = (1, 2, 3),
                base_seeds: Sequence[int] = (0, 1, 2)) -> pd.DataFrame:
    """The runs of the fair comparison, each under the point it belongs to.

    Per base method and add-on of ``chosen`` (``none`` included: the base method at a rate of
    its own), three points: ``"base rate"`` (the add-on at the base method's rate, seeds
    ``base_seeds``), ``"renorm"`` (there, each masked direction rescaled to the unmasked one's
    norm) and ``"own rate"`` (at the rate chosen on seed 0, on ``reported_seeds``: the seed it
    was chosen on is left out). A run may stand under two points (own rate = base rate).

    Args:
        runs: a :func:`runs_table` (or :func:`load_grids`) table.
        chosen: ``{(method, addon): lr}``, the rates the rule chose.
        base_rates: ``{method: lr}``, each base method's rate.
        reported_seeds: the seeds the own rate is reported on.
        base_seeds: the seeds of the base rate and renorm points.

    Returns:
        ``runs``' rows for these points with a ``point`` column (:data:`FAIR_POINTS`) and
        ``rate_ratio`` (the run's rate over the base method's).
    """
    parts = []
    for (method, addon), lr in chosen.items():
        if method not in base_rates:
            raise ValueError(f"No base rate for {method!r}; base_rates has {sorted(base_rates)}.")
        base = base_rates[method]
        same = runs[(runs.method == method) & (runs.addon == addon)]
        renorm = same.renorm.astype(bool)
        at_base = np.isclose(same.lr.astype(float), base) & same.seed.isin(base_seeds)
        at_own = (np.isclose(same.lr.astype(float), lr) & same.seed.isin(reported_seeds)
                  & ~renorm)
        for point, mask in zip(FAIR_POINTS, (at_base & ~renorm, at_base & renorm, at_own)):
            parts.append(same[mask].assign(point=point, rate_ratio=same[mask].lr / base))
    columns = list(runs.columns) + ["point", "rate_ratio"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def fair_table(points: pd.DataFrame, metric: str = "avg_gap", digits: int = 1) -> pd.DataFrame:
    """:func:`fair_points` in short: one row per method and add-on, one column per point, each
    cell the metric's ``mean ± sd`` over the runs that did not diverge, with ``(k diverged)``
    where some did and ``"–"`` where none was recorded; the own rate's column names its rate as
    a multiple of the base rate."""
    rows = {}
    order = {a: i for i, a in enumerate(ADDON_NAMES)}
    pairs = sorted(set(zip(points.method, points.addon)),
                   key=lambda pair: (list(dict.fromkeys(points.method)).index(pair[0]),
                                     order.get(pair[1], len(order))))
    for method, addon in pairs:
        part = points[(points.method == method) & (points.addon == addon)]
        name = METHOD_NAMES.get(method, method) + ("" if addon == "none"
                                                    else f" + {ADDON_NAMES.get(addon, addon)}")
        row = {}
        for point in FAIR_POINTS:
            cell = part[part.point == point]
            ok = cell[~cell.diverged][metric].astype(float)
            text = _mean_sd_text(ok.mean(), ok.std(ddof=1), digits)
            if (lost := int(cell.diverged.sum())):
                text += f" ({lost} of {len(cell)} diverged)"
            row[point] = text
        own = part[part.point == "own rate"]
        row["own rate is"] = (f"{own.rate_ratio.iloc[0]:g}× base" if len(own) else "–")
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=list(FAIR_POINTS) + ["own rate is"])


def where(table: pd.DataFrame, **values: Any) -> pd.DataFrame:
    """The rows of ``table`` whose columns equal ``values``, e.g. ``where(runs, scale="cpu",
    protocol="authors")``."""
    mask = pd.Series(True, index=table.index)
    for column, value in values.items():
        mask &= table[column] == value
    return table[mask]


def _num(value: Any) -> float:
    """A stored number as a float; ``None`` (stored NaN) as NaN."""
    return math.nan if value is None else float(value)


def _scenario(config: Mapping[str, Any]) -> str:
    if config.get("scenario") == "class":
        return f"class {config.get('forget_class')}"
    return f"random {round(100 * float(config.get('forget_fraction') or 0.1)):d}%"


def _base_method(method: str) -> str:
    return method.removesuffix("_authors")


def _mia_feature(final: Mapping[str, Any]) -> str:
    """The feature of the authors' member rate: ``entropy`` (their table's) when recorded."""
    return "entropy" if final.get("MIA_member_entropy") is not None else "confidence"


def _member_rates(metrics: Mapping[str, Any], feature: str) -> list[float]:
    """The member rates of ``feature`` over SalUn's member set and the others recorded."""
    main = metrics.get(f"MIA_member_{feature}")
    if main is None and feature == "confidence" and metrics.get("MIA") is not None:
        main = 100.0 - metrics["MIA"]
    rates = [] if main is None else [float(main)]
    rates += [float(v) for v in (metrics.get("MIA_subsets") or {}).get(feature, [])
              if v is not None]
    return rates


def _travel(final: Mapping[str, Any], record: Mapping[str, Any]) -> float:
    """How far UA went from the original's towards the retrained model's, in percent."""
    start = _num((record.get("original") or {}).get("metrics", {}).get("UA"))
    target = _num((record.get("retrained") or {}).get("metrics", {}).get("UA"))
    if math.isnan(start) or math.isnan(target) or target == start:
        return math.nan
    return 100.0 * (_num(final.get("UA")) - start) / (target - start)


def _normalized(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored configuration with every field of today's :class:`Config` (a record written
    before a field existed gets its default, so it keys like a new one); as stored when it
    cannot be read back."""
    try:
        return Config.from_dict(config).to_dict()
    except (TypeError, ValueError):
        return dict(config)


def run_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One run as a flat row: its setting, final metrics, spread, convergence and times.

    Columns: ``scale``, ``protocol``, ``dataset``, ``model``, ``scenario`` (e.g. ``"random
    10%"``), ``method``, ``base_method`` (``ngplus`` for ``ngplus_authors``), ``lr``, ``addon``,
    ``p`` (PROB's threshold, else NaN), ``renorm``, ``seed``, ``epochs``; the final ``UA``,
    ``RA``, ``TA``, ``MIA`` (SalUn's efficacy), ``avg_gap``, ``rUA``, ``abs_rUA``, ``ua_travel``
    (how far UA went from the original's to the retrained model's, in percent), ``FID``,
    ``mia_feature`` and ``mia_member`` (the authors' member rate on that feature: ``entropy``
    where recorded, else ``confidence``), ``mia_member_retrained`` (the retrained model's, the
    target) and ``mia_member_gap`` (their absolute difference), ``mia_subset_sd`` and
    ``mia_subset_range`` (its
    spread over the attack's member sets, SalUn's included), ``epochs_to_target`` (epochs to
    the retrained model's UA within 1 point, NaN if never), ``reached``, ``diverged_epoch``
    (NaN if none), ``diverged``, ``unlearn_s`` (unlearning only), ``unlearn_cpu_s`` (the same in
    CPU seconds, NaN in records made before it was recorded), ``epoch_s`` (its mean per epoch),
    ``total_s`` (the whole run), and ``setting`` (a key shared by the seeds of one
    setting), ``base_key`` (shared with the same setting without add-on) and
    ``base_key_any_lr`` (the same at any learning rate).
    """
    config = _normalized(record["config"])
    final = record["final"]
    feature = _mia_feature(final)
    rates = _member_rates(final, feature)
    retrained = _member_rates((record.get("retrained") or {}).get("metrics") or {}, feature)
    epochs = [e for e in record.get("epochs", []) if isinstance(e, Mapping)]
    lr = config.get("lr")
    if lr is None:
        lr = (record.get("method") or {}).get("default_lr")
    # the rate as run: a method's default named or left out is one setting
    setting = {**{k: v for k, v in config.items() if k not in _NOT_SETTING}, "lr": lr}
    base = {k: v for k, v in setting.items() if k not in _ADDON_FIELDS}
    any_lr = {k: v for k, v in base.items() if k != "lr"}
    diverged = record.get("diverged_epoch")
    reached = final.get("epochs_to_reach_retrain_ua")
    timings = record.get("timings") or {}
    unlearn_s = _num(final.get("unlearn_wall_time", timings.get("unlearn_s")))
    unlearn_cpu_s = _num(final.get("unlearn_cpu_time", timings.get("unlearn_cpu_s")))
    return {
        "scale": config.get("scale", record.get("scale")),
        "protocol": config.get("protocol", record.get("protocol")),
        "dataset": config.get("dataset"),
        "model": config.get("model"),
        "scenario": _scenario(config),
        "method": config.get("method"),
        "base_method": _base_method(config.get("method", "")),
        "lr": _num(lr),
        "addon": config.get("addon"),
        "p": _num(config.get("p")) if config.get("addon") == "prob" else math.nan,
        "renorm": bool(config.get("renorm", False)),
        "seed": config.get("seed"),
        "epochs": config.get("epochs") or len(epochs),
        **{m: _num(final.get(m)) for m in ("UA", "RA", "TA", "MIA", "avg_gap", "rUA", "FID")},
        "abs_rUA": abs(_num(final.get("rUA"))),
        "ua_travel": _travel(final, record),
        "mia_feature": feature,
        "mia_member": rates[0] if rates else math.nan,
        "mia_member_retrained": retrained[0] if retrained else math.nan,
        "mia_member_gap": (abs(rates[0] - retrained[0]) if rates and retrained else math.nan),
        "mia_subset_sd": float(np.std(rates, ddof=1)) if len(rates) > 1 else math.nan,
        "mia_subset_range": float(max(rates) - min(rates)) if len(rates) > 1 else math.nan,
        "epochs_to_target": _num(reached),
        "reached": reached is not None,
        "diverged_epoch": _num(diverged),
        "diverged": diverged is not None,
        "unlearn_s": unlearn_s,
        "unlearn_cpu_s": unlearn_cpu_s,
        "epoch_s": unlearn_s / len(epochs) if epochs else math.nan,
        "total_s": _num(timings.get("total_s")),
        "setting": json.dumps(setting, sort_keys=True),
        "base_key": json.dumps(base, sort_keys=True),
        "base_key_any_lr": json.dumps(any_lr, sort_keys=True),
    }


_RUN_COLUMNS = list(run_row({"config": {"method": "x", "scale": "s"}, "final": {}}).keys())


def runs_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record (:func:`run_row`); an empty table with the same columns for none."""
    rows = [run_row(r) for r in records]
    return pd.DataFrame(rows, columns=_RUN_COLUMNS)


#: The columns that name a setting in summaries, in display order.
GROUP: tuple[str, ...] = ("scale", "protocol", "dataset", "model", "scenario", "method", "lr",
                          "addon", "p", "renorm")
#: The metrics :func:`summarize` averages by default.
SUMMARY_METRICS: tuple[str, ...] = ("UA", "ua_travel", "RA", "TA", "MIA", "mia_member",
                                    "avg_gap", "rUA", "FID", "mia_subset_sd", "epochs_to_target",
                                    "unlearn_s", "epoch_s")


def summarize(runs: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each setting, diverged runs left out.

    Args:
        runs: a :func:`runs_table`.
        metrics: the columns to average.

    Returns:
        One row per setting, with the :data:`GROUP` columns, ``seeds`` (runs recorded), ``diverged``
        (of them, diverged), ``reached`` (of the others, those that reached the retrained
        model's UA), and ``<metric>_mean`` and ``<metric>_sd`` (NaN with one run) over the runs
        that did not diverge (``epochs_to_target`` over those that reached it).
    """
    columns = list(GROUP) + ["seeds", "diverged", "reached"]
    columns += [f"{m}_{s}" for m in metrics for s in ("mean", "sd")]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for _, group in runs.groupby("setting", sort=False):
        first = group.iloc[0]
        ok = group[~group.diverged]
        row = {k: first[k] for k in GROUP}
        row.update(seeds=len(group), diverged=int(group.diverged.sum()),
                   reached=int(ok.reached.sum()))
        for m in metrics:
            values = ok.loc[ok.reached, m] if m == "epochs_to_target" else ok[m]
            values = values.dropna()
            row[f"{m}_mean"] = values.mean() if len(values) else math.nan
            row[f"{m}_sd"] = values.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def format_mean_sd(summary: pd.DataFrame, metrics: Sequence[str], digits: int = 1) -> pd.DataFrame:
    """``"mean ± sd"`` strings of :func:`summarize`'s columns (``"mean"`` alone with one run,
    ``"–"`` with none; no-break spaces around ``±``)."""
    out = pd.DataFrame(index=summary.index)
    for m in metrics:
        out[m] = [_mean_sd_text(mean, sd, digits)
                  for mean, sd in zip(summary[f"{m}_mean"], summary[f"{m}_sd"])]
    return out


def _mean_sd_text(mean: float, sd: float, digits: int) -> str:
    """One cell of :func:`format_mean_sd`: ``"–"``, ``"mean"`` or ``"mean ± sd"``."""
    if pd.isna(mean):
        return "–"
    if pd.isna(sd):
        return f"{mean:.{digits}f}"
    # no-break spaces: a table cell does not wrap inside its number
    return f"{mean:.{digits}f}\u00a0±\u00a0{sd:.{digits}f}"


def references_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The original and the retrained model of each run's scenario and seed, one row each.

    Columns: ``scale``, ``protocol``, ``dataset``, ``model``, ``scenario``, ``seed``,
    ``reference`` (``"original"`` or ``"retrained"``), ``UA``, ``RA``, ``TA``, ``MIA``, ``rUA``,
    ``FID``, ``mia_member`` (the same feature as :func:`run_row`), ``mia_subset_sd`` and
    ``train_accuracy``; duplicates (several runs share their references) dropped.
    """
    rows, seen = [], set()
    for record in records:
        config = record["config"]
        feature = _mia_feature(record["final"])
        for kind in ("original", "retrained"):
            metrics = record.get(kind, {}).get("metrics", {})
            rates = _member_rates(metrics, feature)
            key = (config.get("scale"), config.get("protocol"), config.get("dataset"),
                   config.get("model"), _scenario(config), config.get("seed"), kind)
            if key in seen:
                continue
            seen.add(key)
            rows.append({
                "scale": key[0], "protocol": key[1], "dataset": key[2], "model": key[3],
                "scenario": key[4], "seed": key[5], "reference": kind,
                **{m: _num(metrics.get(m)) for m in ("UA", "RA", "TA", "MIA", "rUA", "FID")},
                "mia_member": rates[0] if rates else math.nan,
                "mia_subset_sd": float(np.std(rates, ddof=1)) if len(rates) > 1 else math.nan,
                "train_accuracy": _num(record.get(kind, {}).get("train", {})
                                       .get("train_accuracy")),
            })
    columns = ["scale", "protocol", "dataset", "model", "scenario", "seed", "reference", "UA",
               "RA", "TA", "MIA", "rUA", "FID", "mia_member", "mia_subset_sd", "train_accuracy"]
    return pd.DataFrame(rows, columns=columns)


def epoch_curves(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The per-epoch values of each run, in long form, for figures like the paper's Fig. 5.

    Epoch 0 is the original model (no time). Columns: the :func:`run_row` setting columns
    (``scale``, ``protocol``, ``dataset``, ``model``, ``scenario``, ``method``, ``lr``,
    ``addon``, ``p``, ``renorm``, ``seed``, ``diverged``), ``epoch``, and ``UA``, ``RA``,
    ``TA``, ``MIA`` (SalUn's efficacy), ``mia_member`` (the authors' member rate, same feature
    as :func:`run_row`), ``rUA``, ``epoch_s`` (this epoch's unlearning seconds: CPU seconds
    where the record has them, which do not grow with the machine's load, else wall-clock) and
    ``kept_fraction``.
    """
    keys = ("scale", "protocol", "dataset", "model", "scenario", "method", "lr", "addon", "p",
            "renorm", "seed", "diverged")
    values = ("UA", "RA", "TA", "MIA", "mia_member", "rUA", "epoch_s", "kept_fraction")
    rows = []
    for record in records:
        row = run_row(record)
        feature = row["mia_feature"]
        head = {k: row[k] for k in keys}
        start = record.get("original", {}).get("metrics", {})
        rates = _member_rates(start, feature)
        rows.append({**head, "epoch": 0, **{m: _num(start.get(m)) for m in ("UA", "RA", "TA",
                                                                          "MIA", "rUA")},
                     "mia_member": rates[0] if rates else math.nan, "epoch_s": math.nan,
                     "kept_fraction": math.nan})
        for e in record.get("epochs", []):
            rates = _member_rates(e, feature)
            rows.append({**head, "epoch": e.get("epoch"),
                         **{m: _num(e.get(m)) for m in ("UA", "RA", "TA", "MIA", "rUA")},
                         "mia_member": rates[0] if rates else math.nan,
                         # CPU seconds where recorded, else wall-clock seconds
                         "epoch_s": _num(e.get("cpu_time", e.get("wall_time"))),
                         "kept_fraction": _num(e.get("kept_fraction"))})
    return pd.DataFrame(rows, columns=list(keys) + ["epoch"] + list(values))


def verdict(improvements: Sequence[float], spread: float = 0.0) -> tuple[str, float, float, int]:
    """The verdict of one comparison over seeds (the module's rule).

    Args:
        improvements: per seed, the improvement in the claimed direction (> 0: as claimed);
            NaN entries are left out.
        spread: a spread the mean must also exceed (the member-subset spread for the MIA), >= 0.

    Returns:
        ``(verdict, mean, standard error, n)``: ``"holds"`` when the mean exceeds
        ``t = max(2 SE, spread)``, ``"does not hold"`` when it is ``<= -t``, else ``"mixed"``
        (always with fewer than 2 values, whose standard error is NaN).
    """
    d = np.asarray([x for x in improvements if x is not None and not math.isnan(x)], float)
    n = len(d)
    if n == 0:
        return "mixed", math.nan, math.nan, 0
    mean = float(d.mean())
    if n < 2:
        return "mixed", mean, math.nan, n
    se = float(d.std(ddof=1) / math.sqrt(n))
    threshold = max(2 * se, 0.0 if spread is None or math.isnan(spread) else float(spread))
    if mean > threshold:
        return "holds", mean, se, n
    if mean <= -threshold:
        return "does not hold", mean, se, n
    return "mixed", mean, se, n


def _time_key(*runs: pd.Series | pd.DataFrame) -> str:
    """``"unlearn_cpu_s"`` when every run has its CPU seconds, else ``"unlearn_s"`` (wall)."""
    def has_cpu(run: pd.Series | pd.DataFrame) -> bool:
        values = np.asarray(run.get("unlearn_cpu_s", math.nan), float)
        return bool(values.size) and bool(np.isfinite(values).all())
    return "unlearn_cpu_s" if all(has_cpu(r) for r in runs) else "unlearn_s"


def _counted_epochs(run: pd.Series) -> float:
    """A run's epochs to the target UA as the claims count them: one epoch past its last when
    it never got there."""
    return float(run.epochs_to_target) if run.reached else float(run.epochs) + 1


def _improvement(metric: str, base: pd.Series, treated: pd.Series) -> float:
    """Per seed: how much ``treated`` improves on ``base`` in the claim's direction."""
    if metric == "mia_member":
        return base.mia_member - treated.mia_member
    if metric == "abs_rUA":
        return base.abs_rUA - treated.abs_rUA
    if metric == "epochs_to_target":
        return _counted_epochs(base) - _counted_epochs(treated)
    if metric == "time_ratio":  # CPU seconds where both runs have them: wall time varies with load
        key = _time_key(base, treated)
        if not base[key] > 0:
            return math.nan
        return MANAGEABLE_TIME_RATIO - treated[key] / base[key]
    raise ValueError(f"Unknown metric {metric!r}.")


_CLAIM_METRICS: dict[str, tuple[str, ...]] = {
    "lower_mia": ("mia_member",), "better_rua": ("abs_rUA",), "faster": ("epochs_to_target",),
    "time": ("time_ratio",), "beats_baselines": ("mia_member", "abs_rUA", "epochs_to_target"),
}

_COMPARISON_COLUMNS = ["claim", "scale", "protocol", "dataset", "model", "scenario", "method",
                       "lr", "addon", "p", "renorm", "baseline", "baseline_lr", "metric", "seeds",
                       "diverged", "lost", "baseline_diverged", "treated_mean", "baseline_mean",
                       "improvement", "se",
                       "spread", "threshold", "verdict"]


def _compare(claim: str, metric: str, treated: pd.DataFrame, base: pd.DataFrame,
             baseline: str) -> dict[str, Any]:
    """One comparison of a treated setting with a baseline setting, paired by seed."""
    ok_t, ok_b = treated[~treated.diverged], base[~base.diverged]
    pairs = ok_t.merge(ok_b, on="seed", suffixes=("", "_b"))
    improvements, spreads = [], []
    for _, pair in pairs.iterrows():
        b = pd.Series({k[:-2]: pair[k] for k in pair.index if k.endswith("_b")})
        improvements.append(_improvement(metric, b, pair))
        spreads += [pair.mia_subset_sd, b.mia_subset_sd]
    spreads = [s for s in spreads if not math.isnan(s)]
    spread = math.sqrt(sum(s * s for s in spreads) / len(spreads)) if spreads else math.nan
    if metric != "mia_member":
        spread = 0.0
    outcome, mean, se, n = verdict(improvements, spread)
    # a seed on which the treated run diverged and the baseline did not counts against the
    # claim (not for run time, on which a stopped run says nothing)
    lost = 0 if metric == "time_ratio" else int(
        (treated.diverged & treated.seed.isin(set(ok_b.seed))).sum())
    if lost >= 2:
        outcome = "does not hold"
    elif lost == 1 and outcome == "holds":
        outcome = "mixed"
    n += lost
    value = _time_key(ok_t, ok_b) if metric == "time_ratio" else metric

    def mean_of(runs: pd.DataFrame) -> float:
        if not len(runs):
            return math.nan
        if metric == "epochs_to_target":  # as the improvement counts them
            return float(np.mean([_counted_epochs(run) for _, run in runs.iterrows()]))
        return float(runs[value].mean())

    first = treated.iloc[0]
    return {
        "claim": claim, **{k: first[k] for k in ("scale", "protocol", "dataset", "model",
                                                    "scenario", "method", "lr", "addon", "p",
                                                    "renorm")},
        "baseline": baseline, "baseline_lr": float(base.iloc[0].lr), "metric": metric,
        "seeds": n,
        "diverged": int(treated.diverged.sum() + base.diverged.sum()), "lost": lost,
        "baseline_diverged": int(base.diverged.sum()),
        "treated_mean": mean_of(ok_t), "baseline_mean": mean_of(ok_b),
        "improvement": mean, "se": se, "spread": spread,
        "threshold": max(2 * se, 0.0 if math.isnan(spread) else spread) if n > 1 else math.nan,
        "verdict": outcome,
    }


def claim_comparisons(runs: pd.DataFrame) -> pd.DataFrame:
    """Every comparison behind the paper's claims (:data:`CLAIMS`), with its verdict.

    Claims ``lower_mia``, ``better_rua``, ``faster`` and ``time`` compare each setting with one
    of :data:`PAPER_ADDONS` with the same setting without add-on (same protocol, data, model,
    scenario, method and learning rate; an add-on run at a learning rate of its own, with no
    run without add-on at that rate, is compared with the method's setting without add-on that
    shares the most seeds with it: in the fair comparison, the base method at its own rate,
    both on seeds 1-3; else the most-seeded, its usual rate). ``beats_baselines`` compares
    each SRL or NGPlus setting with one of them against SalUn (SRL with SalUn's mask, the
    authors' per-step one or the static one, whichever the protocol ran), and each SRL one also
    against NGPlus without add-on (NGPlus with an add-on against NGPlus is what the other
    claims test), on the MIA, ``|rUA|`` and epochs to the target UA; where a baseline ran at
    several learning rates, the treated run's rate, else the setting that shares the most seeds
    with it. Pairs are by seed (:func:`verdict`).

    Returns:
        One row per claim, setting, baseline and metric, with the setting's columns, ``baseline``
        (``"none"``, ``"SalUn"`` or ``"NGPlus"``), ``metric``, ``seeds`` (pairs compared),
        ``diverged`` (runs of either side left out), ``lost`` (seeds on which the treated run
        diverged and the baseline did not: two or more make the comparison "does not hold",
        one keeps it from "holds"; they count in ``seeds``; never for run time),
        ``baseline_diverged`` (the baseline's diverged runs, left out), ``treated_mean`` and
        ``baseline_mean`` (the metric's means; the unlearning seconds for ``time``; for the
        epochs to the target, a run that never got there counts one epoch past its last),
        ``improvement`` (the mean improvement in the claimed direction), ``se``, ``spread``,
        ``threshold`` and ``verdict``.
    """
    rows: list[dict[str, Any]] = []
    if runs.empty:
        return pd.DataFrame(columns=_COMPARISON_COLUMNS)
    settings = [group for _, group in runs.groupby("setting", sort=False)]

    baseline_of = _no_addon_baseline(settings)
    for group in settings:
        first = group.iloc[0]
        if first.addon not in PAPER_ADDONS:
            continue
        if (base := baseline_of(group)) is None:
            continue
        for claim in ("lower_mia", "better_rua", "faster", "time"):
            for metric in _CLAIM_METRICS[claim]:
                rows.append(_compare(claim, metric, group, base, "none"))
    where = ("scale", "protocol", "dataset", "model", "scenario")
    for group in settings:
        first = group.iloc[0]
        if first.addon not in PAPER_ADDONS or first.base_method not in ("srl", "ngplus"):
            continue
        same = [g for g in settings if not g.iloc[0].renorm
                and all(g.iloc[0][k] == first[k] for k in where)]

        def pick(groups: list[pd.DataFrame]) -> pd.DataFrame | None:
            at_lr = [g for g in groups if g.iloc[0].lr == first.lr]  # the same rate first
            return _most_paired(at_lr or groups, group.seed)

        baselines = {"SalUn": pick([g for g in same if g.iloc[0].base_method == "srl"
                                    and g.iloc[0].addon in ("salun", "salun_step")])}
        if first.base_method == "srl":  # NGPlus with an add-on against NGPlus: the claims above
            baselines["NGPlus"] = pick([g for g in same if g.iloc[0].addon == "none"
                                        and g.iloc[0].base_method == "ngplus"])
        for name, base in baselines.items():
            if base is None:
                continue
            for metric in _CLAIM_METRICS["beats_baselines"]:
                rows.append(_compare("beats_baselines", metric, group, base, name))
    return pd.DataFrame(rows, columns=_COMPARISON_COLUMNS)


def claim_ties(comparisons: pd.DataFrame, claim: str) -> pd.DataFrame:
    """How many of a claim's "does not hold" comparisons are ties (both sides' means equal).

    The rule reads a tie as "does not hold" (the claim is an improvement); where every run of
    a setting reaches the target in its first epoch, or none ever does, no add-on can be faster
    (nor closer to 0 where every rUA is 0). One row per column of the verdict table (scale,
    dataset, protocol as run) and scenario, over the comparisons with two seeds or more:
    ``scale``, ``dataset``, ``protocol`` (its name for a reader), ``scenario``, ``counted``,
    ``does_not_hold`` and ``ties``.
    """
    keys = ["scale", "dataset", "protocol", "scenario"]
    columns = keys + ["counted", "does_not_hold", "ties"]
    part = comparisons[(comparisons.claim == claim) & (comparisons.seeds >= 2)] \
        if len(comparisons) else comparisons
    if part.empty:
        return pd.DataFrame(columns=columns)
    part = part.assign(protocol=[_protocol_name(p, lr) for p, lr in zip(part.protocol, part.lr)])
    rows = []
    for values, group in part.groupby(keys, sort=False):
        against = group[group.verdict == "does not hold"]
        rows.append({**dict(zip(keys, values)), "counted": len(group),
                     "does_not_hold": len(against),
                     "ties": int((against.treated_mean == against.baseline_mean).sum())})
    return pd.DataFrame(rows, columns=columns)


def _most_paired(groups: list[pd.DataFrame], seeds: Iterable[int]) -> pd.DataFrame | None:
    """The setting that shares the most seeds with ``seeds`` (the comparison pairs runs by
    seed), then the one with the most runs (ties: the first, in grid order); ``None`` if none."""
    seeds = set(seeds)
    return max(groups, key=lambda g: (len(seeds & set(g.seed)), len(g))) if groups else None


def _no_addon_baseline(settings: list[pd.DataFrame]) -> Callable[[pd.DataFrame],
                                                                  pd.DataFrame | None]:
    """How :func:`claim_comparisons` and :func:`mia_closeness` find a setting's baseline among
    ``settings`` (runs grouped by setting): the same setting without add-on at the same rate,
    else (an add-on at its own rate) the method's setting without add-on that shares the most
    seeds with it (the fair comparison's add-ons at their own rates meet the base method at its
    own rate, both on seeds 1-3), then the most-seeded."""
    nones: dict[str, pd.DataFrame] = {}
    nones_any_lr: dict[str, list[pd.DataFrame]] = {}
    for group in settings:
        first = group.iloc[0]
        if first.addon == "none":
            nones[first.base_key] = group
            nones_any_lr.setdefault(first.base_key_any_lr, []).append(group)

    def baseline_of(group: pd.DataFrame) -> pd.DataFrame | None:
        first = group.iloc[0]
        if (base := nones.get(first.base_key)) is not None:
            return base
        return _most_paired(nones_any_lr.get(first.base_key_any_lr, []), group.seed)

    return baseline_of


def _protocol_name(protocol: str, lr: float | None = None) -> str:
    """The protocol's name for a reader; given the run's ``lr``, the authors' protocol at another
    rate than theirs is named as such (:func:`_protocol_as_run`)."""
    if lr is not None:
        protocol = _protocol_as_run(protocol, lr)
    return PROTOCOL_NAMES.get(protocol, protocol)


def _protocol_as_run(protocol: str, lr: float) -> str:
    """``"authors_tuned"`` for the authors' protocol at another rate than theirs, else
    ``protocol``: their 1e-4 barely moves a small model, so the two answer different questions."""
    from feasible.unlearn import PROTOCOLS

    authors_lr = PROTOCOLS["authors"]["lr"]
    if protocol == "authors" and not math.isclose(float(lr), authors_lr, rel_tol=1e-9):
        return "authors_tuned"
    return protocol


def claim_verdicts(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The verdict of each claim per scale, dataset and protocol, over its comparisons (module
    rule).

    Returns:
        One row per claim (in :data:`CLAIMS` order), scale, dataset and protocol, with ``claim``,
        ``statement``, ``scale``, ``dataset``, ``protocol`` (``"authors_tuned"`` for the
        authors' protocol at another rate than their 1e-4, a column of its own), ``verdict`` (one of
        :data:`VERDICTS`, or ``"not tested"`` when no comparison has two seeds yet),
        ``holds``, ``does_not_hold``,
        ``mixed`` (counts over the comparisons with at least two seeds), ``counted`` (their
        number) and ``one_seed`` (comparisons left out for having fewer than two seeds).
        Claims without any comparison are absent.
    """
    columns = ["claim", "statement", "scale", "dataset", "protocol", "verdict", "holds",
               "does_not_hold", "mixed", "counted", "one_seed"]
    rows = []
    if comparisons.empty:
        return pd.DataFrame(columns=columns)
    comparisons = comparisons.assign(protocol=[
        _protocol_as_run(p, lr) for p, lr in zip(comparisons.protocol, comparisons.lr)])
    for claim in CLAIMS:
        part = comparisons[comparisons.claim == claim]
        for (scale, dataset, protocol), group in part.groupby(["scale", "dataset", "protocol"],
                                                              sort=True):
            counted = group[group.seeds >= 2]
            counts = {v: int((counted.verdict == v).sum()) for v in VERDICTS}
            n = len(counted)
            if not n:
                outcome = "not tested"
            elif counts["holds"] > n / 2 and counts["does not hold"] == 0:
                outcome = "holds"
            elif n and counts["does not hold"] > n / 2 and counts["holds"] == 0:
                outcome = "does not hold"
            else:
                outcome = "mixed"
            rows.append({"claim": claim, "statement": CLAIMS[claim], "scale": scale,
                         "dataset": dataset, "protocol": protocol, "verdict": outcome,
                         "holds": counts["holds"],
                         "does_not_hold": counts["does not hold"], "mixed": counts["mixed"],
                         "counted": n, "one_seed": int(len(group) - n)})
    return pd.DataFrame(rows, columns=columns)


def verdict_table(verdicts: pd.DataFrame, bold: bool = False) -> pd.DataFrame:
    """The verdict table in short: one row per claim, one column per protocol and scale, each
    cell the verdict and its counts (e.g. ``"mixed (3 hold, 1 not, 16 unclear)"``, or ``"not
    tested yet (2 comparisons with one seed)"``); ``bold`` puts the verdict in Markdown bold.

    Args:
        verdicts: a :func:`claim_verdicts` table.
        bold: mark the verdict ``**...**`` (for Markdown).

    Returns:
        A table indexed by the claims' statements (:data:`CLAIMS`), with columns
        ``"<protocol>, <scale>, <dataset>"``, those with a verdict first; empty when
        ``verdicts`` is.
    """
    if verdicts.empty:
        return pd.DataFrame()
    tested = set(zip(*(verdicts.loc[verdicts.verdict != "not tested", k]
                       for k in ("scale", "dataset", "protocol"))))
    # the columns with a verdict first: a reader sees them without scrolling
    cols = sorted(set(zip(verdicts.scale, verdicts.dataset, verdicts.protocol)),
                  key=lambda col: (col not in tested, col))
    table = {}
    for claim in CLAIMS:
        part = verdicts[verdicts.claim == claim]
        if part.empty:
            continue
        cells = {}
        for scale, dataset, protocol in cols:
            row = where(part, scale=scale, dataset=dataset, protocol=protocol)
            head = (f"{_protocol_name(protocol)}, {scale}, "
                    f"{DATASET_NAMES.get(dataset, dataset)}")
            if row.empty:
                cells[head] = "not tested yet (no comparison recorded)"
                continue
            r = row.iloc[0]
            if r.verdict == "not tested":
                plural = "s" if r.one_seed != 1 else ""
                cells[head] = f"not tested yet ({r.one_seed} comparison{plural} with one seed)"
            else:
                word = f"**{r.verdict}**" if bold else r.verdict
                cells[head] = (f"{word} ({r.holds} hold, {r.does_not_hold} not, "
                               f"{r.mixed} unclear)")
        table[CLAIMS[claim]] = cells
    return pd.DataFrame.from_dict(table, orient="index")


def verdict_summary(verdicts: pd.DataFrame, claim: str) -> str:
    """One claim's verdict per protocol, scale and dataset, with its counts, as lines of text
    (``"No comparison recorded yet."`` when there is none).

    Args:
        verdicts: :func:`claim_verdicts` rows.
        claim: one of :data:`CLAIMS`.

    Raises:
        ValueError: for a claim not in :data:`CLAIMS`.
    """
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {sorted(CLAIMS)}, got {claim!r}")
    lines = []
    for row in verdicts[verdicts.claim == claim].itertuples():
        lines.append(f"{_protocol_name(row.protocol)}, {row.scale}, "
                     f"{row.dataset}: {row.verdict}\n"
                     f"  {row.holds} hold, {row.does_not_hold} do not, {row.mixed} mixed, of "
                     f"{row.counted} with 2+ seeds; {row.one_seed} with one seed")
    return "\n".join(lines) or "No comparison recorded yet."


def verdict_markdown(verdicts: pd.DataFrame, status: Mapping[str, str] | None = None) -> str:
    """:func:`verdict_table` as a Markdown table (for a page's ``{include}``), with ``status``
    lines (e.g. ``{"cpu-authors": "12 of 84 configurations recorded"}``) said under it."""
    table = verdict_table(verdicts, bold=True)
    if table.empty:
        text = "No claim can be tested yet: no comparison has been recorded.\n"
    else:
        lines = ["| claim | " + " | ".join(table.columns) + " |",
                 "|---" * (len(table.columns) + 1) + "|"]
        lines += [f"| {claim} | " + " | ".join(row) + " |" for claim, row in table.iterrows()]
        text = "\n".join(line.replace("D_f", "$D_f$") for line in lines) + "\n"
    if status:
        text += "\n" + "; ".join(f"`{name}`: {line}" for name, line in status.items()) + ".\n"
    return text


def mia_closeness(runs: pd.DataFrame) -> pd.DataFrame:
    """The member rate read against the retrained model's, the target of unlearning.

    The paper's claim reads a lower member rate as better; but a method that forgets more than
    retraining would (a member rate below the retrained model's) is then "better" the further it
    overshoots. This table puts each setting with one of :data:`PAPER_ADDONS` beside the same
    setting without add-on (same protocol, data, model, scenario, method and rate; for an add-on
    at its own rate, the method's setting that shares the most seeds with it, as in
    :func:`claim_comparisons`), both as
    means over their seeds that did not diverge.

    Returns:
        A table with one row per such setting and the columns ``protocol``, ``scenario``,
        ``method``, ``lr``, ``addon``, ``seeds``, ``retrained`` (the retrained model's member
        rate), ``member_none`` and
        ``member`` (the rates without and with the add-on), ``gap_none`` and ``gap`` (their
        distances to the retrained model's), ``lower`` (the add-on's rate is lower: the paper's
        reading) and ``closer`` (its gap is smaller).
    """
    columns = ["protocol", "scenario", "method", "lr", "addon", "seeds", "retrained",
               "member_none", "member", "gap_none", "gap", "lower", "closer"]
    ok = runs[~runs.diverged] if len(runs) else runs
    settings = [group for _, group in ok.groupby("setting", sort=False)] if len(ok) else []
    baseline_of = _no_addon_baseline(settings)
    rows = []
    for group in settings:
        first = group.iloc[0]
        if first.addon not in PAPER_ADDONS:
            continue
        if (base := baseline_of(group)) is None:
            continue
        member, member_none = group.mia_member.mean(), base.mia_member.mean()
        gap, gap_none = group.mia_member_gap.mean(), base.mia_member_gap.mean()
        rows.append({"protocol": _protocol_name(first.protocol, first.lr),
                     "scenario": first.scenario, "method": METHOD_NAMES.get(first.method,
                                                                            first.method),
                     "lr": first.lr, "addon": ADDON_NAMES.get(first.addon, first.addon),
                     "seeds": len(group),
                     "retrained": pd.concat([group, base]).mia_member_retrained.mean(),
                     "member_none": member_none, "member": member,
                     "gap_none": gap_none, "gap": gap,
                     "lower": bool(member < member_none), "closer": bool(gap < gap_none)})
    return pd.DataFrame(rows, columns=columns)


def mia_spread_table(runs: pd.DataFrame) -> pd.DataFrame:
    """How much of the differences between add-ons the attack's member sets can explain.

    For each scale, dataset, model, protocol, scenario, method and learning rate with two
    add-ons or more (diverged runs left out; an add-on at a rate of its own is in no group):
    ``addons`` compared, ``largest_difference`` (the largest minus the smallest add-on's mean
    member rate), ``subset_sd`` and ``subset_range`` (the member-subset standard deviation and
    range of one run's member rate, averaged over the runs), and ``pairs_beyond`` / ``pairs``:
    the pairs of add-ons whose means differ by more than the member-subset standard deviation.
    ``protocol`` is named for a reader, the authors' at a tuned rate as such.
    """
    keys = ["scale", "dataset", "model", "protocol", "scenario", "method", "lr", "mia_feature"]
    columns = keys + ["addons", "largest_difference", "subset_sd", "subset_range",
                      "pairs_beyond", "pairs"]
    ok = runs[~runs.diverged] if not runs.empty else runs
    rows = []
    if ok.empty:
        return pd.DataFrame(columns=columns)
    for key, group in ok.groupby(keys, sort=True):
        means = group.groupby("setting").mia_member.mean().dropna().to_numpy()
        if len(means) < 2:
            continue
        sd = float(group.mia_subset_sd.mean())
        diffs = [abs(a - b) for i, a in enumerate(means) for b in means[i + 1:]]
        row = dict(zip(keys, key))
        row["protocol"] = _protocol_name(row["protocol"], row["lr"])
        rows.append({**row, "addons": len(means),
                     "largest_difference": float(means.max() - means.min()),
                     "subset_sd": sd, "subset_range": float(group.mia_subset_range.mean()),
                     "pairs_beyond": int(sum(d > sd for d in diffs)) if not math.isnan(sd)
                     else 0,
                     "pairs": len(diffs)})
    return pd.DataFrame(rows, columns=columns)


def mia_agreement(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The merged SVM attack against SalUn's full one (``tools/check_mia_merge.py``'s file).

    Args:
        path: ``results/checks/mia_merge.json`` (``{"rows": [{model, feature, full, merged,
            full_s, merged_s}, ...]}``; relative paths from the repository root); a missing
            file gives empty tables.

    Returns:
        ``(rows, by_feature)``: every row with ``difference`` = ``|full - merged|`` (points)
        and ``speedup`` = ``full_s / merged_s``, and, where the tool made them (rows that differ
        by more than its ``SOLVER_CHECK``), ``merged_unrounded`` (merged without rounding) and
        ``full_tol_1e-5`` (unmerged at libsvm tolerance 1e-5 instead of 1e-3), NaN elsewhere;
        and per feature the ``models``, the ``max_difference``, the ``mean_difference`` and the
        ``speedup`` of the summed times.
    """
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = ROOT / path
    cols = ["model", "feature", "full", "merged", "full_s", "merged_s", "difference", "speedup"]
    try:
        rows = json.loads(path.read_text()).get("rows", [])
    except (OSError, ValueError, AttributeError):
        rows = []
    table = pd.DataFrame(rows, columns=cols[:6] + ["merged_unrounded", "full_tol_1e-5"])
    table["difference"] = (table.full - table.merged).abs()
    table["speedup"] = table.full_s / table.merged_s
    by = pd.DataFrame(columns=["feature", "models", "max_difference", "mean_difference",
                               "speedup"])
    if len(table):
        by = (table.groupby("feature", sort=False)
              .agg(models=("model", "nunique"), max_difference=("difference", "max"),
                   mean_difference=("difference", "mean"), full_s=("full_s", "sum"),
                   merged_s=("merged_s", "sum"))
              .reset_index())
        by["speedup"] = by.full_s / by.merged_s
        by = by.drop(columns=["full_s", "merged_s"])
    return table, by


#: The columns of :func:`results_table`: summary metric -> header.
RESULT_COLUMNS: dict[str, str] = {"UA": "UA", "ua_travel": "UA travelled", "RA": "RA",
                                  "TA": "TA", "MIA": "MIA-eff.",
                                  "mia_member": "MIA member", "mia_subset_sd": "member-set sd",
                                  "avg_gap": "Avg. Gap", "rUA": "rUA", "FID": "FID"}


#: Three views of :func:`results_table` that fit a page's width: accuracy; membership and the
#: gaps to the retrained model; convergence and cost.
RESULT_VIEWS: dict[str, list[str]] = {
    "accuracy": ["UA", "UA travelled", "RA", "TA"],
    "MIA and gaps to the retrained model": ["MIA-eff.", "MIA member", "member-set sd",
                                            "Avg. Gap", "rUA", "FID"],
    "convergence and cost": ["lr", "to target", "diverged", "s / run", "seeds"],
}


def results_table(runs: pd.DataFrame, references: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """The final metrics of one protocol and scenario as a display table, mean ± sd over seeds.

    Rows (index ``setting``): the retrained and the original model first (the references),
    then each method and add-on, by method, learning rate (named in the row when a method ran
    at several) and add-on. Columns: ``lr``, :data:`RESULT_COLUMNS` (percent; ``rUA`` in
    points; ``MIA-eff.`` SalUn's efficacy, ``MIA member`` the authors' member rate), ``to
    target`` (the seeds that reached the retrained model's UA within 1 point, of those that did
    not diverge, and their mean epoch), ``diverged`` (runs), ``s / run`` (unlearning seconds)
    and ``seeds``; :data:`RESULT_VIEWS` splits them in three.
    """
    out = []
    for kind in ("retrained", "original"):
        part = references[references.reference == kind]
        row = {"setting": kind + " model", "lr": ""}
        for m, head in RESULT_COLUMNS.items():
            values = part[m].dropna() if m in part else pd.Series(dtype=float)
            row[head] = ("–" if values.empty
                         else f"{values.mean():.{digits}f}" if len(values) == 1
                         else f"{values.mean():.{digits}f}\u00a0±\u00a0"
                              f"{values.std(ddof=1):.{digits}f}")
        if kind == "retrained":
            row["Avg. Gap"] = "0"
        row.update({"UA travelled": "100" if kind == "retrained" else "0", "to target": "",
                    "diverged": "", "s / run": "", "seeds": str(len(part))})
        out.append(row)
    summary = summarize(runs)
    if len(summary):  # by method, rate and add-on, in the order of ADDON_NAMES
        rank = {name: i for i, name in enumerate(ADDON_NAMES)}
        summary = (summary.assign(_rank=summary.addon.map(rank).fillna(len(rank)))
                   .sort_values(["method", "lr", "_rank", "renorm", "p"], kind="stable")
                   .drop(columns="_rank").reset_index(drop=True))
    rates = summary.groupby("method").lr.nunique() if len(summary) else pd.Series(dtype=int)
    cells = format_mean_sd(summary, list(RESULT_COLUMNS) + ["unlearn_s"], digits)
    for (_, s), (_, c) in zip(summary.iterrows(), cells.iterrows()):
        name = _setting_name(s) + (f" (p = {s.p:g})" if not pd.isna(s.p) else "")
        if rates.get(s.method, 1) > 1:  # several rates: the rate names the row
            name += f", lr {s.lr:g}"
        row = {"setting": name, "lr": "" if pd.isna(s.lr) else f"{s.lr:g}"}
        row.update({head: c[m] for m, head in RESULT_COLUMNS.items()})
        done = s.seeds - s.diverged
        epochs = ("" if pd.isna(s.epochs_to_target_mean)
                  else f":\u00a0{s.epochs_to_target_mean:.{digits}f}")
        row["to target"] = f"{s.reached}/{done}{epochs}"
        row["diverged"] = str(int(s.diverged))
        row["s / run"] = c["unlearn_s"]
        row["seeds"] = str(int(s.seeds))
        out.append(row)
    columns = ["setting", "lr"] + list(RESULT_COLUMNS.values()) + ["to target", "diverged",
                                                                   "s / run", "seeds"]
    return pd.DataFrame(out, columns=columns).set_index("setting").rename_axis(None)


#: How :func:`ablation_table` names a value of a varied field (else ``"<field> <number>"`` or
#: the value itself).
_VALUE_NAMES: dict[tuple[str, Any], str] = {
    ("optimizer", "adam"): "Adam", ("optimizer", "sgd"): "SGD", ("agg", "lin"): "linG",
    ("agg", "min"): "MinG", ("focus_variant", "probability"): "probability (as coded)"}
_FIELD_NAMES: dict[str, str] = {"p": "p =", "batch_size": "batch", "lr": "lr"}
#: The metric columns of :func:`ablation_table`.
_ABLATION_METRICS: tuple[str, ...] = ("UA", "RA", "TA", "MIA", "mia_member", "mia_subset_sd",
                                      "avg_gap", "abs_rUA", "kept_fraction", "unlearn_s")


def _value_text(name: str, value: Any) -> str:
    if name == "addon":
        return ADDON_NAMES.get(value, str(value))
    if (name, value) in _VALUE_NAMES:
        return _VALUE_NAMES[(name, value)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{_FIELD_NAMES.get(name, name)} {value:g}"
    return str(value)


def ablation_table(grid: GridRecords) -> pd.DataFrame:
    """One row per configuration of a (sub-)grid, recorded or not: an ablation's numbers.

    Columns: the grid's :attr:`GridRecords.varied` fields (their values), and ``addon`` if it
    is not one of them; ``value`` (the varied values as pages name them, e.g. ``"PROB, SGD, lr
    1"``); ``recorded``; ``diverged_epoch``; and the
    final ``UA``, ``RA``, ``TA``, ``MIA`` (SalUn's efficacy), ``mia_member``,
    ``mia_subset_sd``, ``avg_gap``, ``abs_rUA`` and ``unlearn_s`` of :func:`run_row`, with
    ``kept_fraction`` (percent: the mean over the unlearning epochs of the share of coordinates
    the mask kept). A configuration not recorded has NaN metrics: nothing is filled in.
    """
    by_hash = {}
    for record in grid.records:
        by_hash[record.get("hash") or config_hash(Config.from_dict(record["config"]))] = record
    rows = []
    for config in grid.configs:
        values = config.to_dict()
        row: dict[str, Any] = {name: values.get(name) for name in grid.varied + ["addon"]}
        row["value"] = ", ".join(_value_text(n, values.get(n)) for n in grid.varied) or "–"
        record = by_hash.get(config_hash(config))
        row["recorded"] = record is not None
        run = run_row(record) if record is not None else {}
        kept = [_num(e.get("kept_fraction")) for e in (record or {}).get("epochs", [])
                if isinstance(e, Mapping)]
        kept = [k for k in kept if not math.isnan(k)]
        run["kept_fraction"] = 100.0 * float(np.mean(kept)) if kept else math.nan
        row["diverged_epoch"] = run.get("diverged_epoch", math.nan)
        row.update({m: run.get(m, math.nan) for m in _ABLATION_METRICS})
        rows.append(row)
    columns = list(dict.fromkeys(grid.varied + ["addon"])) + ["value", "recorded",
                                                              "diverged_epoch"]
    return pd.DataFrame(rows, columns=columns + list(_ABLATION_METRICS))


def ablation_display(table: pd.DataFrame, references: pd.DataFrame,
                     digits: int = 1) -> pd.DataFrame:
    """:func:`ablation_table` as a page shows it, the retrained and original models first.

    Rows: the references, then each configuration by its ``value`` (no-break spaces: a label
    does not wrap). Columns: UA, RA, TA, MIA-eff., MIA member, member-set sd, Avg. Gap,
    ``|rUA|``, ``kept %``, ``s / run`` (unlearning seconds) and ``record`` (``"yes"``, ``"not
    yet"`` or ``"diverged in epoch k"``); a reference's cells are the mean over its seeds, ``"–"``
    where there is none.
    """
    heads = {"UA": "UA", "RA": "RA", "TA": "TA", "MIA": "MIA-eff.", "mia_member": "MIA member",
             "mia_subset_sd": "member-set sd", "avg_gap": "Avg. Gap", "abs_rUA": "|rUA|",
             "kept_fraction": "kept %", "unlearn_s": "s / run"}

    def cell(value: float) -> str:
        return "–" if pd.isna(value) else f"{value:.{digits}f}"

    rows = {}
    for kind in ("retrained", "original"):
        part = references[references.reference == kind]
        if part.empty:
            continue
        means = {m: part[m].mean() if m in part else math.nan for m in heads}
        means["abs_rUA"] = part.rUA.abs().mean()
        means["avg_gap"] = 0.0 if kind == "retrained" else math.nan
        rows[f"{kind} model"] = {heads[m]: cell(means[m]) for m in heads} | {"record": ""}
    for _, r in table.iterrows():
        state = ("not yet" if not r.recorded else "yes" if pd.isna(r.diverged_epoch)
                 else f"diverged in epoch {int(r.diverged_epoch)}")
        rows[r.value.replace(" ", "\u00a0")] = ({heads[m]: cell(r[m]) for m in heads}
                                                | {"record": state})
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=list(heads.values()) + ["record"])


def show(table: pd.DataFrame, digits: int = 1) -> Any:
    """A table as pages show it: without its integer index, numbers to ``digits`` decimals,
    missing values as ``"–"`` (a pandas ``Styler``)."""
    return table.style.hide(axis="index").format(precision=digits, na_rep="–")


def _setting_name(row: Mapping[str, Any]) -> str:
    """``"SRL + PROB"``: a run's method and add-on as pages name them."""
    method, addon = row["method"], row["addon"]
    name = f"{METHOD_NAMES.get(method, method)} + {ADDON_NAMES.get(addon, addon)}"
    if row.get("renorm"):
        name += " renorm"
    return name


def ranking(runs: pd.DataFrame, metric: str = "avg_gap") -> pd.DataFrame:
    """Settings ranked by the mean of ``metric`` over their seeds that did not diverge, lowest
    first, per scenario; a setting whose every run diverged comes last.

    Returns:
        A table with one row per scenario and setting and the columns ``scenario``, ``setting``
        (e.g. ``"SRL + PROB"``), ``lr``, ``seeds``, ``diverged``, ``mean``, ``sd`` (NaN with one
        run) and ``rank``
        (1-based within the scenario).
    """
    columns = ["scenario", "setting", "lr", "seeds", "diverged", "mean", "sd", "rank"]
    rows = []
    for _, group in runs.groupby("setting", sort=False):
        first = group.iloc[0]
        values = group.loc[~group.diverged, metric].dropna()
        rows.append({"scenario": first.scenario, "setting": _setting_name(first),
                     "lr": first.lr, "seeds": len(group), "diverged": int(group.diverged.sum()),
                     "mean": values.mean() if len(values) else math.nan,
                     "sd": values.std(ddof=1) if len(values) > 1 else math.nan})
    table = pd.DataFrame(rows, columns=columns[:-1])
    if table.empty:
        return pd.DataFrame(columns=columns)
    table = table.sort_values(["scenario", "mean"], na_position="last", kind="stable")
    table["rank"] = table.groupby("scenario").cumcount() + 1
    return table.reset_index(drop=True)


def convergence_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Epochs to the retrained model's UA (within 1 point), per setting and scenario.

    Returns:
        A table with one row per method + add-on (with its protocol), one column per scenario,
        and cells ``"k/n: e"``, the
        ``k`` runs of ``n`` that did not diverge and reached the target, and their mean epoch
        ``e`` (``"k/n"`` alone when none did).
    """
    summary = summarize(runs, ("epochs_to_target",))
    if summary.empty:
        return pd.DataFrame()
    cells = {}
    for _, s in summary.iterrows():
        done = s.seeds - s.diverged
        text = f"{s.reached}/{done}"
        if not pd.isna(s.epochs_to_target_mean):
            text += f": {s.epochs_to_target_mean:.1f}"
        key = (_protocol_name(s.protocol), _setting_name(s))
        cells.setdefault(key, {})[s.scenario] = text
    table = pd.DataFrame.from_dict(cells, orient="index").fillna("–")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["protocol", "method + add-on"])
    return table


def diverged_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The diverged runs as pages show them: protocol, scenario, method + add-on, learning
    rate, seed and the epoch in which the loop stopped."""
    columns = ["protocol", "scenario", "setting", "lr", "seed", "stopped in epoch"]
    part = runs[runs.diverged] if not runs.empty else runs
    rows = [{"protocol": _protocol_name(r.protocol), "scenario": r.scenario,
             "setting": _setting_name(r), "lr": f"{r.lr:g}", "seed": int(r.seed),
             "stopped in epoch": int(r.diverged_epoch)} for _, r in part.iterrows()]
    return pd.DataFrame(rows, columns=columns)


def claim_evidence(comparisons: pd.DataFrame, claim: str, digits: int = 2) -> pd.DataFrame:
    """The comparisons of one claim as a display table, one row per comparison.

    Columns: protocol, scenario, ``treated`` (method + add-on), ``baseline``, ``metric``,
    ``seeds``, the two means, ``improvement ± SE``, ``spread`` (the MIA's member-subset spread,
    blank for other metrics) and ``verdict``; comparisons with one seed are marked ``(1 seed)``.
    """
    part = comparisons[comparisons.claim == claim]
    rows = []
    for _, c in part.iterrows():
        se = "" if pd.isna(c.se) else f" ± {c.se:.{digits}f}"
        rows.append({
            "protocol": _protocol_name(c.protocol), "scenario": c.scenario,
            "treated": _setting_name(c), "baseline": c.baseline, "metric": c.metric,
            "seeds": int(c.seeds), "baseline mean": round(c.baseline_mean, digits),
            "treated mean": round(c.treated_mean, digits),
            "improvement": ("–" if pd.isna(c.improvement)
                            else f"{c.improvement:.{digits}f}{se}"),
            "spread": "" if c.metric != "mia_member" or pd.isna(c.spread)
            else f"{c.spread:.{digits}f}",
            "verdict": c.verdict + (" (1 seed)" if c.seeds < 2 else ""),
        })
    columns = ["protocol", "scenario", "treated", "baseline", "metric", "seeds", "baseline mean",
               "treated mean", "improvement", "spread", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def authors_comparison(runs: pd.DataFrame) -> pd.DataFrame:
    """The authors' public table (:data:`AUTHORS_TABLE`) beside the same settings measured here.

    Their table gives OPT and focus + OPT for NGPlus and SRL (no plain baseline). For each, and
    for each dataset recorded here, the means under the authors' protocol at their learning
    rate (Adam 1e-4; random forgetting; the runs that did not diverge): the member rate (the
    feature recorded: ``entropy`` as theirs where present), ``rUA`` and seconds per epoch;
    theirs: MIA-entropy member rate (percent), ``rUA`` and RTE.

    Returns:
        One row per setting (and dataset, when the runs hold several).
    """
    here = runs[(runs.protocol == "authors") & runs.scenario.str.startswith("random")
                & ~runs.diverged & (runs.lr == 1e-4)] if not runs.empty else runs
    datasets = sorted(set(here.dataset)) if len(here) else [None]
    rows = []
    for ref in AUTHORS_TABLE:
        for dataset in datasets:
            part = here[(here.base_method == ref["method"]) & (here.addon == ref["addon"])
                        & (here.dataset == dataset)] if len(here) else here
            features = sorted(set(part.mia_feature)) if len(part) else []
            name = f"{METHOD_NAMES[ref['method']]} + {ADDON_NAMES[ref['addon']]}"
            if len(datasets) > 1:
                name += f" ({DATASET_NAMES.get(dataset, dataset)})"
            rows.append({
                "setting": name,
                "their MIA-entropy member (%)": ref["MIA_entropy"], "their rUA": ref["rUA"],
                "their s / epoch": ref["RTE"], "runs here": len(part),
                "MIA member here (%)": round(part.mia_member.mean(), 2) if len(part)
                else math.nan,
                "feature here": ", ".join(features) or "–",
                "rUA here": round(part.rUA.mean(), 2) if len(part) else math.nan,
                "s / epoch here": round(part.epoch_s.mean(), 3) if len(part) else math.nan,
            })
    return pd.DataFrame(rows).set_index("setting").rename_axis(None)


def departures_table(configs: Sequence[Config]) -> pd.DataFrame:
    """The authors' setting beside this grid's, aspect by aspect.

    The authors' column is their public code (owl1996/UnlearningFocusVector: ``base_params.txt``,
    ``params.txt``, ``array_param_file.py``, ``arg_parser.py``, ``unlearn/``, ``evaluation/``);
    the other column is read from the configurations (resolved values), so a changed grid
    changes the table.

    Args:
        configs: the configurations of a grid under the authors' protocol (non-empty).

    Returns:
        Columns ``aspect``, ``authors' code`` and ``here``.
    """
    from feasible.experiment import SCALES
    from feasible.unlearn import relevant_fields

    first = configs[0]
    scale = SCALES[first.scale]
    recipe = first.train_config()
    resolved = relevant_fields(first.unlearn_config())

    def values(name: str) -> str:
        found = list(dict.fromkeys(str(getattr(c, name)) for c in configs))
        return ", ".join(found)

    scenarios = list(dict.fromkeys(_scenario(c.to_dict()) for c in configs))
    subset = scale.train_subset.get(first.dataset)
    rows = [
        ("data", "CIFAR-10 (and SVHN), the whole training set",
         f"{values('dataset')}" + (f", a stratified {subset:,}-image training subset"
                                     if subset else ", the whole training set")),
        ("model", "VGG16-BN (and ResNet18)", values("model")
         + (f" (width {recipe.width})" if recipe.width else "")),
        ("original model", "SGD lr 0.1, momentum 0.9, wd 5e-4, batch 256, 100 epochs",
         f"SGD lr {recipe.lr:g}, momentum {recipe.momentum:g}, wd {recipe.weight_decay:g}, "
         f"batch {recipe.batch_size}, {recipe.epochs} epochs ({recipe.schedule})"),
        ("forget set", "4,500 random samples (10 %); class 0: 450 to 3,500 of its samples",
         "; ".join(scenarios) + (" (class: every training image of the class)"
                                 if any(s.startswith("class") for s in scenarios) else "")),
        ("base methods", "NGPlus, SRL (and SCRUB, FT, ...)", values("method")),
        ("add-ons", "SalUn per step, PROB p = 0.3 and 0.5 (AND), focus, OPT, focus + OPT",
         values("addon")),
        ("optimiser", "Adam, lr 1e-4", f"{values('optimizer')}, lr {values('lr')}"),
        ("epochs", "30 passes over D_f", f"{values('epochs')} passes over D_f"),
        ("batch size", "256 (sweep 32 to 512)", values("batch_size")),
        ("beta (weight of the retain loss)", "0.95", f"{resolved.get('beta')}"),
        ("gradient noise", "running second moment, rho = 0.9", values("noise")),
        ("masks", "leaky: gradient zeroed before Adam's step", values("mask_mode")),
        ("seeds", "1 to 6", ", ".join(dict.fromkeys(str(c.seed) for c in configs))),
        ("MIA", "SalUn's SVM (C = 3, RBF), members the first |test| retain samples, full fit",
         "the same SVM and members; equal values rounded to 1e-4 merged with counts as weights; "
         "the member rate also over 5 other member sets"),
        ("UA", "their 'UA' is Acc(D_f)", "UA = 100 - Acc(D_f) (SalUn's); rUA, FID as theirs"),
        ("time", "seconds per epoch, on a GPU",
         "unlearning seconds per epoch, evaluation excluded, 2 runs on a 2-core CPU"),
    ]
    return pd.DataFrame(rows, columns=["aspect", "authors' code", "here"])


def data_sources(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The dataset copies the records read (as each record names it), with their sizes and how
    many records read each."""
    rows = [{"dataset": r["data"].get("dataset"), "source": r["data"].get("source"),
             "train images": r["data"].get("train_size"),
             "test images": r["data"].get("test_size")} for r in records]
    columns = ["dataset", "source", "train images", "test images"]
    table = pd.DataFrame(rows, columns=columns)
    if table.empty:
        return table.assign(records=pd.Series(dtype=int))
    return table.value_counts().rename("records").reset_index()


def environment_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The environments the records were computed in, with how many records each."""
    keys = ("torch", "python", "device", "device_name", "threads", "git_commit", "git_dirty")
    rows = [{k: (r.get("environment") or {}).get(k) for k in keys} for r in records]
    table = pd.DataFrame(rows, columns=list(keys))
    if table.empty:
        return table.assign(records=pd.Series(dtype=int))
    table["git_commit"] = table.git_commit.str[:10]
    return (table.astype(str).value_counts().rename("records").reset_index()
            .sort_values("records", ascending=False, kind="stable").reset_index(drop=True))


def read_records(pattern: str) -> list[dict[str, Any]]:
    """The finished records whose paths match ``pattern`` (a glob; a relative one is read from
    the repository's root, as grid files are), sorted by path; hidden files (a record being
    written) left out.

    Raises:
        ValueError: a matching file is not a finished record
            (:func:`feasible.experiment.read_record` says why), naming the file.
    """
    import glob

    from feasible.experiment import read_record

    if not Path(pattern).is_absolute():
        pattern = str(ROOT / pattern)
    records = []
    for path in sorted(p for p in glob.glob(pattern) if not Path(p).name.startswith(".")):
        record, problem = read_record(Path(path))
        if record is None:
            raise ValueError(f"{path} is not a finished record: {problem or 'gone'}")
        records.append(record)
    return records


def rerun_table(first: Iterable[Mapping[str, Any]],
                again: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Records of the same configuration computed twice, side by side (matched by hash).

    ``first`` are the superseded records, ``again`` the ones that replaced them. Columns:
    ``hash``, ``protocol``, ``method``, ``addon``, ``scenario`` (e.g. ``"random 10%"``),
    ``seed``, then for each of
    ``first`` and ``again``: ``threads``, ``commit`` (10 characters), ``UA``, ``RA``,
    ``avg_gap`` (NaN for a run that diverged) and ``diverged_epoch`` (NaN if none).
    """
    by_hash = {r.get("hash"): r for r in again}
    rows = []
    for old in first:
        new = by_hash.get(old.get("hash"))
        if new is None:
            continue
        c = old["config"]
        row: dict[str, Any] = {"hash": old["hash"], "protocol": c.get("protocol"),
                               "method": c.get("method"), "addon": c.get("addon"),
                               "scenario": _scenario(c), "seed": c.get("seed")}
        for name, r in (("first", old), ("again", new)):
            env, final = r.get("environment") or {}, r.get("final") or {}
            row[f"threads_{name}"] = env.get("threads")
            row[f"commit_{name}"] = str(env.get("git_commit"))[:10]
            for key in ("UA", "RA"):
                row[f"{key}_{name}"] = _num(final.get(key))
            row[f"avg_gap_{name}"] = _num(final.get("avg_gap"))
            row[f"diverged_epoch_{name}"] = _num(r.get("diverged_epoch"))
        rows.append(row)
    columns = ["hash", "protocol", "method", "addon", "scenario", "seed"] + [
        f"{key}_{name}" for name in ("first", "again")
        for key in ("threads", "commit", "UA", "RA", "avg_gap", "diverged_epoch")]
    return pd.DataFrame(rows, columns=columns)


def rerun_view(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`rerun_table` as a page shows it: one row per configuration (``setting``: method and
    add-on, protocol, scenario and seed) and ``threads``, ``UA``, ``Avg. Gap`` and ``diverged at
    epoch`` as ``"first → again"`` (``"–"``: none)."""
    def pair(row: pd.Series, key: str, digits: int) -> str:
        values = [row[f"{key}_{name}"] for name in ("first", "again")]
        return " → ".join("–" if pd.isna(v) else f"{v:.{digits}f}" for v in values)

    rows = [{"setting": f"{_setting_name(row)}, {_protocol_name(row.protocol)}"
                        f", {row.scenario}, seed {row.seed}",
             "threads": pair(row, "threads", 0), "UA": pair(row, "UA", 1),
             "Avg. Gap": pair(row, "avg_gap", 2),
             "diverged at epoch": pair(row, "diverged_epoch", 0)} for _, row in table.iterrows()]
    return pd.DataFrame(rows, columns=["setting", "threads", "UA", "Avg. Gap",
                                       "diverged at epoch"])


def timing_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Measured seconds per run from the records' timings, by scale, dataset, model, protocol
    and method.

    Columns: ``runs``, ``total_s`` (sum of the runs' totals, less the training of any reference
    model a run made itself, which ``train_s`` counts), ``median_run_s``, ``unlearn_s`` and
    ``evaluate_s`` (sums: unlearning; per-epoch and final evaluation), and ``train_s`` (the
    training of the distinct original and retrained models the runs used, when they were made).
    """
    keys = ["scale", "dataset", "model", "protocol", "method"]
    records = list(records)
    rows = []
    for r in records:
        t, c = r.get("timings") or {}, r["config"]
        rows.append({**{k: c.get(k) for k in keys}, "total_s": _own_seconds(t),
                     "unlearn_s": _num(t.get("unlearn_s")),
                     "evaluate_s": _num(t.get("evaluate_epochs_s"))
                     + _num(t.get("evaluate_references_s"))})
    trained = _trained_models(records, keys)
    columns = keys + ["runs", "total_s", "median_run_s", "unlearn_s", "evaluate_s", "train_s"]
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=columns)
    out = (table.groupby(keys)
           .agg(runs=("total_s", "size"), total_s=("total_s", "sum"),
                median_run_s=("total_s", "median"), unlearn_s=("unlearn_s", "sum"),
                evaluate_s=("evaluate_s", "sum")).reset_index())
    out["train_s"] = [sum(seconds for k, seconds in trained.items() if k[:-1] == tuple(row))
                      for row in out[keys].itertuples(index=False)]
    return out[columns]


def _own_seconds(timings: Mapping[str, Any]) -> float:
    """A run's total seconds less the training of the reference models it made itself (a run
    that found a model missing trains it inside its total; :func:`reference_training` counts
    that training once, whichever run did it). A model was made by the run when its
    ``train_<kind>_cached`` is false or, in records older than that field, when its
    ``train_<kind>_s`` is its ``train_<kind>_trained_in_s``."""
    total = _num(timings.get("total_s"))
    for kind in ("original", "retrained"):
        cached = timings.get(f"train_{kind}_cached")
        spent = timings.get(f"train_{kind}_s")
        if cached is False or (cached is None and spent is not None
                               and spent == timings.get(f"train_{kind}_trained_in_s")):
            total -= _num(spent)
    return total


def reference_training(records: Iterable[Mapping[str, Any]]) -> tuple[int, float]:
    """How many distinct original and retrained models ``records`` used and the seconds their
    training took, each model counted once however many runs (of however many methods) shared
    its cached checkpoint; :func:`timing_table`'s ``train_s`` counts a model once per row."""
    trained = _trained_models(records)
    return len(trained), sum(trained.values())


def _trained_models(records: Iterable[Mapping[str, Any]],
                    keys: Sequence[str] = ()) -> dict[tuple, float]:
    """(the config's ``keys`` values..., checkpoint key) -> seconds its training took, for the
    original and retrained models the records used (each distinct one once)."""
    trained: dict[tuple, float] = {}
    for r in records:
        t, c = r.get("timings") or {}, r["config"]
        for kind in ("original", "retrained"):
            key = (r.get(kind, {}).get("train") or {}).get("key")
            if key:
                where = tuple(c.get(k) for k in keys) + (key,)
                trained[where] = _num(t.get(f"train_{kind}_trained_in_s"))
    return trained


# --- figures (matplotlib is imported when a figure is drawn) --------------------------------

#: The panels of :func:`plot_epochs`: column of :func:`epoch_curves` -> axis label.
EPOCH_PANELS: dict[str, str] = {"UA": "UA = 100 - Acc($D_f$) (%)", "RA": "RA = Acc($D_r$) (%)",
                                "TA": "TA = Acc(test) (%)",
                                "mia_member": "MIA: $D_f$ called member (%)",
                                "epoch_s": "time per epoch (s)"}


def _style() -> None:
    import matplotlib as mpl

    mpl.rcParams.update({"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11,
                         "legend.fontsize": 10, "xtick.labelsize": 10, "ytick.labelsize": 10})


def _canvas(figsize: tuple[float, float], into: Any = None) -> Any:
    """A new figure of ``figsize`` (inches, constrained layout), or ``into`` when given (a
    figure or a subfigure of :func:`plot_stacked`, which sized it)."""
    import matplotlib.pyplot as plt

    _style()
    return plt.figure(figsize=figsize, layout="constrained") if into is None else into


def plot_stacked(draws: Sequence[Callable[[Any], Any]]) -> Any:
    """One figure of several plots stacked top to bottom, so that a page shows them as one
    numbered figure.

    Each ``draw(into)`` is one of this module's ``plot_*`` functions with its arguments bound
    (e.g. ``lambda into: plot_times(part, title, into=into)``): called with ``None`` it draws a
    figure of its own size, which is measured and closed; called with a subfigure it draws
    into that. The stack is as wide as the widest plot and as high as all of them.

    Args:
        draws: at least one drawing function.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: for an empty ``draws``.
    """
    import matplotlib.pyplot as plt

    draws = list(draws)
    if not draws:
        raise ValueError("plot_stacked needs at least one plot, got none")
    sizes = []
    for draw in draws:
        alone = draw(None)
        sizes.append(tuple(alone.get_size_inches()))
        plt.close(alone)
    if len(draws) == 1:
        return draws[0](None)
    fig = _canvas((max(w for w, _ in sizes), sum(h for _, h in sizes)))
    parts = fig.subfigures(len(draws), 1, height_ratios=[h for _, h in sizes])
    for draw, part in zip(draws, parts):
        draw(part)
    return fig


def plot_epochs(curves: pd.DataFrame, references: pd.DataFrame, title: str,
                addons: Sequence[str] = FIG5_ADDONS, *, into: Any = None) -> Any:
    """UA, RA, TA, MIA member rate and time per epoch of each add-on, seeds as bands.

    The paper's Fig. 5 redrawn for one protocol, scenario and method: per add-on, the mean over
    the seeds that did not diverge (line) and their range (band); a diverged run as a thin
    dashed line ending in a cross; the retrained model (dashed) and the original (dotted) as
    references.

    Args:
        curves: :func:`epoch_curves` rows of one protocol, scenario and method.
        references: :func:`references_table` rows of the same protocol and scenario.
        title: the figure's title.
        addons: the add-ons drawn, in legend order (those absent from ``curves`` skipped).
        into: a (sub)figure to draw into (:func:`plot_stacked`); None for a new figure.

    Returns:
        The matplotlib figure (3 x 2 panels, the last one the legend).
    """
    from matplotlib.lines import Line2D

    fig = _canvas((7.2, 8.4), into)
    axes = fig.subplots(3, 2)
    handles = []
    present = [a for a in addons if a in set(curves.addon)]
    for addon in present:
        part = curves[curves.addon == addon]
        colour = PALETTE.get(addon, "#999999")
        ok = part[~part.diverged]
        for ax, metric in zip(axes.flat, EPOCH_PANELS):
            if len(ok):
                stats = ok.groupby("epoch")[metric].agg(["mean", "min", "max"]).dropna()
                ax.plot(stats.index, stats["mean"], color=colour, lw=1.8)
                ax.fill_between(stats.index, stats["min"], stats["max"], color=colour,
                                alpha=0.18, lw=0)
            for _, run in part[part.diverged].groupby("seed"):
                line = run.dropna(subset=[metric])
                if len(line):
                    ax.plot(line.epoch, line[metric], color=colour, lw=0.8, ls="--")
                    ax.plot(line.epoch.iloc[-1], line[metric].iloc[-1], "x", color=colour, ms=8)
        handles.append(Line2D([], [], color=colour, lw=2, label=ADDON_NAMES.get(addon, addon)))
    for ax, (metric, label) in zip(axes.flat, EPOCH_PANELS.items()):
        if metric in references and len(references):
            for kind, style in (("retrained", "--"), ("original", ":")):
                value = references.loc[references.reference == kind, metric].mean()
                if not pd.isna(value):
                    ax.axhline(value, color="#555555", ls=style, lw=1)
        ax.set_xlabel("unlearning epoch")
        ax.set_ylabel(label)
    handles += [Line2D([], [], color="#555555", ls="--", lw=1, label="retrained model"),
                Line2D([], [], color="#555555", ls=":", lw=1, label="original model"),
                Line2D([], [], color="#555555", ls="--", lw=0.8, marker="x",
                       label="diverged run")]
    axes.flat[-1].axis("off")
    axes.flat[-1].legend(handles=handles, loc="center", frameon=False, title="add-on")
    fig.suptitle(title)
    return fig


def plot_comparisons(comparisons: pd.DataFrame, title: str, *, into: Any = None) -> Any:
    """Each comparison's mean improvement with ±2 SE (bars) and the MIA spread (grey), by
    verdict colour: a forest plot of one claim for one protocol (right of 0: as claimed). The
    label of a comparison whose add-on diverged where the baseline did not says on how many
    seeds (its mean is over the other seeds, if any)."""

    colours = {"holds": "#009E73", "does not hold": "#D55E00", "mixed": "#999999"}
    markers = {"holds": "o", "does not hold": "s", "mixed": "D"}
    rows = comparisons.reset_index(drop=True)
    several_lrs = rows.lr.nunique() > 1  # then each label names its learning rate
    fig = _canvas((8, 0.32 * len(rows) + 1.4), into)
    ax = fig.subplots()
    labels = []
    for i, row in rows.iterrows():
        y = len(rows) - 1 - i
        spread = row.spread if row.metric == "mia_member" and not pd.isna(row.spread) else 0
        if spread:
            ax.plot([-spread, spread], [y, y], color="#DDDDDD", lw=6, solid_capstyle="butt")
        err = 2 * row.se if not pd.isna(row.se) else 0
        ax.errorbar(row.improvement, y, xerr=err, fmt=markers[row.verdict],
                    color=colours[row.verdict], ms=5, capsize=2)
        base = "" if row.baseline == "none" else f" vs {row.baseline}"
        rate = f", lr {row.lr:g}" if several_lrs and not pd.isna(row.lr) else ""
        lost = int(row.get("lost", 0) or 0)
        diverged = f" (diverged on {lost} of {row.seeds} seeds)" if lost else ""
        if not lost and pd.isna(row.improvement) and row.get("baseline_diverged", 0):
            diverged = " (the baseline diverged)"
        labels.append(f"{METHOD_NAMES.get(row.method, row.method)} + "
                      f"{ADDON_NAMES.get(row.addon, row.addon)}{base}, {row.scenario}{rate}"
                      f"{diverged}")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows) - 1, -1, -1), labels)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    units = {"mia_member": "points of MIA", "abs_rUA": "points of |rUA|",
             "epochs_to_target": "epochs", "time_ratio": "2 - time ratio"}
    metric = rows.metric.iloc[0] if len(rows) else ""
    ax.set_xlabel(f"improvement over the baseline ({units.get(metric, metric)}; > 0 as claimed)")
    ax.set_title(title)
    return fig


def plot_times(runs: pd.DataFrame, title: str, *, into: Any = None) -> Any:
    """Unlearning seconds per run of each method and add-on (one dot per seed; crosses:
    diverged), one panel per scenario, from 0."""

    scenarios = sorted(set(runs.scenario))
    panels = max(1, len(scenarios))
    fig = _canvas((3.6 * panels + 0.6, 3.6), into)
    axes = fig.subplots(1, panels, squeeze=False, sharey=True)
    methods = sorted(set(runs.method))
    addons = [a for a in ADDON_NAMES if a in set(runs.addon)]
    width = 0.8 / max(1, len(addons))
    for ax, scenario in zip(axes.flat, scenarios):
        part = runs[runs.scenario == scenario]
        for j, addon in enumerate(addons):
            for i, method in enumerate(methods):
                cell = part[(part.method == method) & (part.addon == addon)]
                x = i - 0.4 + width * (j + 0.5)
                for _, run in cell.iterrows():
                    ax.plot(x, run.unlearn_s, "x" if run.diverged else "o",
                            color=PALETTE.get(addon, "#999999"), ms=4)
        ax.set_xticks(range(len(methods)), [METHOD_NAMES.get(m, m) for m in methods])
        ax.set_title(scenario)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("unlearning time per run (s)")
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=PALETTE.get(a, "#999999"), marker="o", ls="",
                      label=ADDON_NAMES.get(a, a)) for a in addons]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4),
               frameon=False)
    fig.suptitle(title)
    return fig


def plot_gap_dots(runs: pd.DataFrame, title: str, metric: str = "avg_gap", *,
                  into: Any = None) -> Any:
    """One metric's final value per setting (method and add-on), one dot per seed and a bar at
    their mean, one panel per scenario; a diverged run is a cross at the panel's right edge.

    Rows are in the order of ``runs`` (by method, then add-on in :data:`ADDON_NAMES` order),
    coloured by add-on. The default metric is the Avg. Gap to the retrained model (lower is
    closer); any column of :func:`runs_table` works.
    """
    scenarios = sorted(set(runs.scenario)) or [""]
    order = {a: i for i, a in enumerate(ADDON_NAMES)}
    settings = sorted({(m, a) for m, a in zip(runs.method, runs.addon)},
                      key=lambda s: (list(dict.fromkeys(runs.method)).index(s[0]),
                                     order.get(s[1], len(order))))
    labels = [METHOD_NAMES.get(m, m) + ("" if a == "none" else f" + {ADDON_NAMES.get(a, a)}")
              for m, a in settings]
    fig = _canvas((3.4 * len(scenarios) + 1.6, 0.32 * len(settings) + 1.4), into)
    axes = fig.subplots(1, len(scenarios), squeeze=False, sharey=True)
    top = np.nanmax(runs[metric].to_numpy(float)) if len(runs) else 1.0
    edge = 1.05 * (top if np.isfinite(top) and top > 0 else 1.0)
    for ax, scenario in zip(axes.flat, scenarios):
        part = runs[runs.scenario == scenario]
        for y, (method, addon) in enumerate(settings):
            cell = part[(part.method == method) & (part.addon == addon)]
            colour = PALETTE.get(addon, "#999999")
            ok = cell[~cell.diverged][metric].dropna()
            if len(ok):
                ax.plot([ok.mean()] * 2, [y - 0.35, y + 0.35], color=colour, lw=2)
            ax.plot(ok, [y] * len(ok), "o", color=colour, ms=4, alpha=0.8)
            ax.plot([edge] * int(cell.diverged.sum()), [y] * int(cell.diverged.sum()), "x",
                    color=colour, ms=6)
        ax.set_yticks(range(len(settings)), labels)
        ax.set_ylim(max(len(settings), 1) - 0.5, -0.5)
        ax.set_xlim(0, edge * 1.04)
        ax.set_title(scenario)
        ax.set_xlabel({"avg_gap": "Avg. Gap to the retrained model (points)"}.get(metric, metric))
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    return fig


def plot_fair(points: pd.DataFrame, title: str, metric: str = "avg_gap", *,
              into: Any = None) -> Any:
    """:func:`fair_points` drawn: one panel per base method, one row per add-on, and in each
    row one line of dots per point (base rate, renorm, own rate; one dot per seed, a bar at the
    mean); a diverged run is a cross at the panel's right edge. The metric's axis is
    logarithmic: the Avg. Gaps of one panel span more than a decade."""
    methods = list(dict.fromkeys(points.method)) or [""]
    colours = dict(zip(FAIR_POINTS, ("#000000", "#56B4E9", "#009E73")))
    offsets = dict(zip(FAIR_POINTS, (-0.25, 0.0, 0.25)))
    order = {a: i for i, a in enumerate(ADDON_NAMES)}
    values = points.loc[~points.diverged, metric].astype(float)
    values = values[values > 0]
    low, top = (values.min(), values.max()) if len(values) else (1.0, 10.0)
    edge = top * 1.6
    counts = [points[points.method == m].addon.nunique() for m in methods]
    fig = _canvas((7.2, 0.55 * sum(counts) + 1.0 * len(methods) + 0.8), into)
    axes = fig.subplots(len(methods), 1, squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [max(c, 1) for c in counts]})[:, 0]
    for ax, method in zip(axes, methods):
        part = points[points.method == method]
        addons = sorted(set(part.addon), key=lambda a: order.get(a, len(order)))
        for y, addon in enumerate(addons):
            for point in FAIR_POINTS:
                cell = part[(part.addon == addon) & (part.point == point)]
                ok = cell.loc[~cell.diverged, metric].astype(float)
                yy = y + offsets[point]
                if len(ok):
                    ax.plot([ok.mean()] * 2, [yy - 0.1, yy + 0.1], color=colours[point], lw=2)
                ax.plot(ok, [yy] * len(ok), "o", color=colours[point], ms=4, alpha=0.8)
                if (lost := int(cell.diverged.sum())):
                    ax.plot(edge, yy, "x", color=colours[point], ms=6)
                    ax.annotate(f"{lost}", (edge, yy), xytext=(5, 0), fontsize=8,
                                textcoords="offset points", va="center")
        ax.set_yticks(range(len(addons)), [ADDON_NAMES.get(a, a) for a in addons])
        ax.set_ylim(len(addons) - 0.5, -0.5)
        ax.set_title(METHOD_NAMES.get(method, method))
        ax.set_xscale("log")
        ax.set_xlim(low / 1.3, edge * 1.5)
        ticks = [t for t in (0.5, 1, 2, 5, 10, 20, 50, 100, 200) if low / 1.3 <= t <= edge * 1.5]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xticks([], minor=True)
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[-1].set_xlabel({"avg_gap": "Avg. Gap to the retrained model (points, log scale; "
                                    "×: diverged runs, counted)"}.get(metric, metric))
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=colours[p], marker="o", ls="", label=p) for p in FAIR_POINTS]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(title)
    return fig


def plot_mia_closeness(table: pd.DataFrame, *, into: Any = None) -> Any:
    """:func:`mia_closeness` drawn: per setting, the member rate without the add-on (ring) and
    with it (dot; green when closer to the retrained model's, vermilion when not), joined by a
    line (grey: as close), and the retrained model's rate (grey bar), one panel per protocol."""
    protocols = list(dict.fromkeys(table.protocol)) or [""]
    sizes = [max(1, int((table.protocol == p).sum())) for p in protocols]
    fig = _canvas((8, 0.3 * sum(sizes) + 1.2 * len(protocols) + 0.6), into)
    axes = fig.subplots(len(protocols), 1, squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": sizes})[:, 0]
    for ax, protocol in zip(axes, protocols):
        part = table[table.protocol == protocol].reset_index(drop=True)
        labels = []
        for i, row in part.iterrows():
            y = len(part) - 1 - i
            colour = ("#009E73" if row.closer else "#999999" if row.gap == row.gap_none
                      else "#D55E00")
            ax.plot([row.retrained] * 2, [y - 0.35, y + 0.35], color="#999999", lw=3)
            ax.plot([row.member_none, row.member], [y, y], color=colour, lw=1)
            ax.plot(row.member_none, y, "o", mfc="white", mec="k", ms=5)
            ax.plot(row.member, y, "o", color=colour, ms=5)
            labels.append(f"{row.method} + {row.addon}, {row.scenario}, lr {row.lr:g}")
        ax.set_yticks(range(len(part) - 1, -1, -1), labels)
        ax.set_ylim(-0.7, max(len(part), 1) - 0.3)
        ax.set_title(protocol)
        ax.grid(axis="x", alpha=0.3)
    axes[-1].set_xlabel("share of $D_f$ the attack calls member (%)")
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], marker="o", ls="", mfc="white", mec="k", label="without add-on"),
               Line2D([], [], marker="o", ls="", color="#009E73", label="with, closer"),
               Line2D([], [], marker="o", ls="", color="#D55E00", label="with, not closer"),
               Line2D([], [], color="#999999", lw=3, label="retrained model")]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
    return fig


def plot_verdict_grid(comparisons: pd.DataFrame, title: str, *, into: Any = None) -> Any:
    """The verdicts of many comparisons at a glance: rows the treated settings, columns the
    scenario, baseline and metric, each cell coloured by verdict and labelled with the mean
    improvement (in the metric's unit; > 0 as claimed)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    short = {"mia_member": "MIA", "abs_rUA": "|rUA|", "epochs_to_target": "epochs",
             "time_ratio": "time"}
    several = comparisons.scenario.nunique() > 1
    several_lrs = comparisons.lr.nunique() > 1  # then each row names its learning rate
    table = comparisons.assign(
        row=[_setting_name(r) + (f", lr {r.lr:g}" if several_lrs else "")
             for _, r in comparisons.iterrows()],
        col=[(f"{r.scenario}\n" if several else "")
             + f"vs {r.baseline}\n{short.get(r.metric, r.metric)}"
             for _, r in comparisons.iterrows()])
    rows = list(dict.fromkeys(table.row))
    cols = list(dict.fromkeys(table.col))
    code = {"holds": 0, "does not hold": 1, "mixed": 2}
    grid = np.full((len(rows), len(cols)), np.nan)
    fig = _canvas((0.95 * len(cols) + 2.6, 0.42 * len(rows) + 1.9), into)
    ax = fig.subplots()
    for _, r in table.iterrows():
        i, j = rows.index(r.row), cols.index(r.col)
        grid[i, j] = code[r.verdict]
        text = "–" if pd.isna(r.improvement) else f"{r.improvement:.1f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=10,
                color="white" if r.verdict != "mixed" else "black")
    cmap = ListedColormap(["#009E73", "#D55E00", "#DDDDDD"])
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-0.5, vmax=2.5, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=10)
    ax.set_yticks(range(len(rows)), rows)
    ax.tick_params(length=0)
    fig.legend(handles=[Patch(color=c, label=v) for v, c in
                        zip(VERDICTS, ["#009E73", "#D55E00", "#DDDDDD"])],
               loc="outside lower center", ncol=3, frameon=False)
    ax.set_title(title)
    return fig


def plot_claim(comparisons: pd.DataFrame, claim: str) -> Any:
    """All comparisons of one claim as one figure, or None when there is none.

    One plot per scale, dataset and protocol stacked (:func:`plot_stacked`): a forest plot
    (:func:`plot_comparisons`) for the claims against the method without add-on, a verdict
    grid (:func:`plot_verdict_grid`, one per scenario too) for ``beats_baselines``.

    Args:
        comparisons: :func:`claim_comparisons` rows (any claims; those of ``claim`` drawn).
        claim: one of :data:`CLAIMS`.

    Raises:
        ValueError: for a claim not in :data:`CLAIMS`.
    """
    if claim not in CLAIMS:
        raise ValueError(f"claim must be one of {sorted(CLAIMS)}, got {claim!r}")
    grid = claim == "beats_baselines"
    keys = ["scale", "dataset", "protocol"] + (["scenario"] if grid else [])
    plot = plot_verdict_grid if grid else plot_comparisons
    draws = []
    for values, group in comparisons[comparisons.claim == claim].groupby(keys):
        case = dict(zip(keys, values))
        title = (f"{_protocol_name(case['protocol'])}, "
                 f"{DATASET_NAMES.get(case['dataset'], case['dataset'])}"
                 + (f", {case['scenario']}" if grid else "") + f" ({case['scale']} scale)")
        draws.append(lambda into, group=group, title=title: plot(group, title, into=into))
    return plot_stacked(draws) if draws else None


def plot_lr_sweep(curves: pd.DataFrame, references: pd.DataFrame, title: str, *,
                  into: Any = None) -> Any:
    """UA per epoch of a method without add-on at each learning rate recorded (seeds as bands),
    with the retrained (dashed) and original (dotted) models' UA: does the forget accuracy
    travel from the original's to the retrained model's?"""

    fig = _canvas((7.4, 3.8), into)
    ax = fig.subplots()
    colours = ["#000000", "#0072B2", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#D55E00"]
    part = curves[~curves.diverged].dropna(subset=["UA"])
    for colour, (lr, group) in zip(colours * 3, part.groupby("lr")):
        stats = group.groupby("epoch").UA.agg(["mean", "min", "max"])
        ax.plot(stats.index, stats["mean"], color=colour, lw=1.8, marker="o", ms=3,
                label=f"lr {lr:g}")
        ax.fill_between(stats.index, stats["min"], stats["max"], color=colour, alpha=0.15, lw=0)
    for kind, style in (("retrained", "--"), ("original", ":")):
        value = references.loc[references.reference == kind, "UA"].mean()
        if not pd.isna(value):
            ax.axhline(value, color="#555555", ls=style, lw=1, label=f"{kind} model")
    ax.set_xlabel("unlearning epoch")
    ax.set_ylabel("UA = 100 - Acc($D_f$) (%)")
    ax.legend(frameon=False, fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(title)
    return fig


#: The panels of :func:`plot_ablation`: column of :func:`ablation_table` -> axis label.
ABLATION_PANELS: dict[str, str] = {"UA": "UA (%)", "RA": "RA (%)", "TA": "TA (%)",
                                   "mia_member": "MIA member (%)", "avg_gap": "Avg. Gap",
                                   "abs_rUA": "|rUA| (points)", "kept_fraction": "kept (%)",
                                   "unlearn_s": "unlearning time (s)"}


def plot_ablation(table: pd.DataFrame, references: pd.DataFrame, title: str, *,
                  into: Any = None) -> Any:
    """The final metrics of an ablation against the varied value, the recorded runs only.

    One panel per :data:`ABLATION_PANELS` metric; x: the varied value (a numeric axis when one
    number varies, logarithmic when it spans a factor 8 or more; else one position per value),
    one colour per add-on (:data:`PALETTE`), joined by lines on a numeric axis and side by side
    on the others; a cross for a diverged run; the MIA member rate
    with the member-set standard deviation as a bar. The retrained model dashed (0 for Avg.
    Gap and ``|rUA|``), the original dotted (means over their seeds).

    Args:
        table: an :func:`ablation_table`.
        references: :func:`references_table` rows of the ablation's records.
        title: the figure's title.
        into: a (sub)figure to draw into (:func:`plot_stacked`); None for a new figure.

    Returns:
        The matplotlib figure (2 x 4 panels, the legend below).
    """
    from matplotlib.lines import Line2D

    fields = [c for c in table.columns[:list(table.columns).index("value")] if c != "addon"]
    numeric = (len(fields) == 1 and table[fields[0]].map(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all())
    if numeric:
        x_of = dict(zip(table.index, table[fields[0]].astype(float)))
    else:
        names = [", ".join(_value_text(f, v) for f, v in zip(fields, row)) or "–"
                 for row in table[fields].itertuples(index=False)]
        positions = {name: i for i, name in enumerate(dict.fromkeys(names))}
        x_of = {i: positions[n] for i, n in zip(table.index, names)}
    addons = list(dict.fromkeys(table.addon))
    fig = _canvas((10.4, 5.0), into)
    axes = fig.subplots(2, 4)
    done = table[table.recorded]
    for j, addon in enumerate(addons):
        part, colour = done[done.addon == addon], PALETTE.get(addon, "#999999")
        shift = 0 if numeric else 0.12 * (j - (len(addons) - 1) / 2)
        part = part.assign(x=[x_of[i] + shift for i in part.index]).sort_values("x")
        for ax, metric in zip(axes.flat, ABLATION_PANELS):
            ok, bad = part[part.diverged_epoch.isna()], part[part.diverged_epoch.notna()]
            ax.plot(ok.x, ok[metric], "-o" if numeric else "o", color=colour, lw=1.2, ms=5)
            ax.plot(bad.x, bad[metric], "x", color=colour, ms=8)
            if metric == "mia_member":
                ax.errorbar(part.x, part[metric], yerr=part.mia_subset_sd.fillna(0), fmt="none",
                            ecolor=colour, capsize=3, lw=1)
    for ax, (metric, label) in zip(axes.flat, ABLATION_PANELS.items()):
        for kind, style in (("retrained", "--"), ("original", ":")):
            part = references[references.reference == kind]
            value = (0.0 if kind == "retrained" and metric in ("avg_gap", "abs_rUA")
                     else part.rUA.abs().mean() if metric == "abs_rUA" and len(part)
                     else part[metric].mean() if metric in part and len(part) else math.nan)
            if not pd.isna(value):
                ax.axhline(value, color="#555555", ls=style, lw=1)
        ax.set_ylabel(label)
        if numeric:
            values = sorted(set(x_of.values()))
            if values and values[0] > 0 and values[-1] / values[0] >= 8:
                ax.set_xscale("log", base=2)
                ax.set_xticks(values, [f"{v:g}" for v in values])
                ax.minorticks_off()
        else:
            ax.set_xticks(list(positions.values()), list(positions), rotation=30, ha="right")
            ax.set_xlim(-0.5, len(positions) - 0.5)
    axes.flat[-1].set_ylim(bottom=0)
    if numeric:
        for ax in axes[-1]:
            ax.set_xlabel(_FIELD_NAMES.get(fields[0], fields[0]).removesuffix(" ="))
    handles = [Line2D([], [], color=PALETTE.get(a, "#999999"), marker="o",
                      ls="-" if numeric else "", label=ADDON_NAMES.get(a, a)) for a in addons]
    handles += [Line2D([], [], color="#555555", ls="--", lw=1, label="retrained model"),
                Line2D([], [], color="#555555", ls=":", lw=1, label="original model"),
                Line2D([], [], color="#555555", marker="x", ls="", label="diverged run")]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title)
    return fig
