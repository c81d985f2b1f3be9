"""Apply the stated learning-rate rules (feasible.tuning) to the pilot records; write the grids.

    PYTHONPATH=. python tools/choose_lr.py authors   # -> grids/cpu-authors-tuned.json
    PYTHONPATH=. python tools/choose_lr.py cifar     # -> grids/cpu-cifar-tuned.json
    PYTHONPATH=. python tools/choose_lr.py fair      # -> grids/cpu-fair-chosen.json
    PYTHONPATH=. python tools/choose_lr.py related   # -> the rates in grids/cpu-related.json

Each reads the finished seed-0 records of its pilot configurations (under FEASIBLE_RESULTS) and
writes its grid only when every pilot record is there; otherwise it lists what is missing.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from feasible.experiment import finished_record
from feasible.metrics import gaps
from feasible.sweep import expand, load_grid
from feasible.tuning import closest_to_retrained, lowest_avg_gap, record_rate

GRIDS = Path(__file__).resolve().parent.parent / "grids"


def records(configs) -> list:
    found = [finished_record(c, move_aside=False) for c in configs]
    missing = [c for c, r in zip(configs, found) if r is None]
    if missing:
        sys.exit(f"{len(missing)} of {len(configs)} pilot records are missing, e.g. "
                 f"{missing[0].method}+{missing[0].addon} lr={missing[0].lr}; run the pilot first.")
    return found


def authors() -> None:
    tuned("cpu-authors-lr.json", "cpu-authors.json", "cpu-authors-tuned.json",
          "The authors' protocol at a tuned learning rate (the second point of the authors' "
          "protocol; the first, at their 1e-4, is cpu-authors.json)")


def cifar() -> None:
    tuned("cpu-cifar-lr.json", "cpu-cifar.json", "cpu-cifar-tuned.json",
          "The CIFAR-10 subset's VGG16-BN under the authors' protocol at a tuned learning rate "
          "(the second point; the first, at their 1e-4, is in cpu-cifar.json)")


def tuned(pilot_name: str, base_name: str, out_name: str, head: str) -> None:
    """The tuned point of the authors' protocol: ``base_name``'s authors'-protocol sub-grid with
    each base method at the rate :func:`closest_to_retrained` chooses on ``pilot_name``'s
    records and the base grid's seed-0 runs without add-on alike (its 1e-4), on the base grid's
    seeds."""
    pilot = expand(load_grid(GRIDS / pilot_name))
    first = pilot[0]
    base = [c for c in expand(load_grid(GRIDS / base_name))
            if c.seed == 0 and c.scenario == "random" and c.addon == "none"
            and (c.dataset, c.model, c.protocol) == (first.dataset, first.model, first.protocol)]
    chosen = closest_to_retrained(records(pilot + base))
    grid = json.loads((GRIDS / base_name).read_text())
    grid = subgrid_of(grid, first.model)
    rates = ", ".join(f"{m} {v['lr']:g} (|UA - UA_retrained| {v['score']:.2f} on seed 0)"
                      for m, v in sorted(chosen.items()))
    grid["description"] = (
        f"{head}: everything as there but the rate, chosen per base method by the rule of "
        f"feasible.tuning.closest_to_retrained on the seed-0 pilot ({pilot_name} and 1e-4): "
        "the rate whose final UA is closest to the retrained model's with TA within 3 points "
        f"of the original's. Chosen: {rates}. {seeds_said(grid)}")
    grid["methods"] = [{"method": m, "lr": v["lr"]} for m, v in sorted(chosen.items())]
    write(GRIDS / out_name, grid)


def seeds_said(grid: dict) -> str:
    """The seeds ``grid`` (one without sub-grids) runs on, and the seed its rate was chosen on."""
    seeds = grid.get("seeds", [grid.get("fixed", {}).get("seed", 0)])
    named = ("Seed " if len(seeds) == 1 else "Seeds ") + ", ".join(map(str, seeds))
    return f"{named} (the rate was chosen on seed 0)."


def subgrid_of(grid: dict, model: str) -> dict:
    """``grid`` itself, or where it has sub-grids, the one that runs ``model`` (its ``fixed``
    merged over the grid's) as a grid of its own."""
    if "grids" not in grid:
        return grid
    for sub in grid["grids"]:
        fixed = {**grid.get("fixed", {}), **sub.get("fixed", {})}
        if fixed.get("model") == model:
            return {**sub, "fixed": fixed}
    raise ValueError(f"No sub-grid runs model {model!r}.")


def fair() -> None:
    lit = [c for c in expand(load_grid(GRIDS / "cpu-literature.json"))
           if c.seed == 0 and c.method in ("ngplus", "srl")]
    pilot = [c for c in expand(load_grid(GRIDS / "cpu-fair.json")) if not c.renorm]
    found = records(lit + pilot)
    chosen = lowest_avg_gap(found)
    for (method, addon), v in sorted(chosen.items()):
        rates = [record_rate(r) for r in found
                 if (r["config"]["method"], r["config"]["addon"]) == (method, addon)]
        print(edge_advice(f"{method}+{addon}", v, rates, found))
    fixed = json.loads((GRIDS / "cpu-fair.json").read_text())["fixed"]
    grid = {"description": (
        "The fair comparison's own-rate runs: per base method and add-on (none included: the "
        "base method at its own rate too), the rate with the lowest final Avg. Gap on seed 0 "
        "among 0.5x, 1x, 2x and 4x the base rate "
        "(feasible.tuning.lowest_avg_gap over cpu-fair.json and cpu-literature.json), run on "
        "seeds 1-3 (not the seed it was chosen on)."),
        "fixed": fixed,
        "grids": [{"seeds": [1, 2, 3], "methods": [{"method": m, "lr": v["lr"]}], "addons": [a]}
                  for (m, a), v in sorted(chosen.items())]}
    write(GRIDS / "cpu-fair-chosen.json", grid)


def related() -> None:
    pilot = expand(load_grid(GRIDS / "cpu-related-lr.json"))
    found = records(pilot)
    chosen = {method: v for (method, _), v in lowest_avg_gap(found).items()}
    for method, v in chosen.items():
        rates = [record_rate(r) for r in found if r["config"]["method"] == method]
        print(edge_advice(method, v, rates, found))
    path = GRIDS / "cpu-related.json"
    grid = with_rates(json.loads(path.read_text()), {m: v["lr"] for m, v in chosen.items()})
    print("; ".join(f"{m} {v['lr']:g} (Avg. Gap {v['score']:.2f} on seed 0)"
                    for m, v in sorted(chosen.items())))
    write(path, grid)


def edge_advice(method: str, choice: dict, rates: list, found: list) -> str:
    """Whether the pilot's range should grow past ``method``'s chosen rate (``method`` names the
    setting, e.g. ``"srl"`` or ``"srl+and"``; ``rates`` are the rates tried for it): only when it
    is at an end of the rates tried and closer to the retrained model than the original model is
    (a rate no better than not unlearning at all cannot improve by shrinking further)."""
    tried = sorted(rates)
    if choice["lr"] not in (tried[0], tried[-1]):
        return f"{method}: {choice['lr']:g} is inside the rates tried ({_rates(tried)})."
    record = next(r for r in found if r["hash"] == choice["hash"])
    original = gaps(record["original"]["metrics"], record["retrained"]["metrics"])["avg_gap"]
    if choice["score"] < original:
        return (f"warning: {method}'s chosen rate {choice['lr']:g} is at the edge of the rates "
                f"tried ({_rates(tried)}) with an Avg. Gap of {choice['score']:.2f}, below the "
                f"original model's {original:.2f}: extend the pilot past it.")
    return (f"{method}: {choice['lr']:g} is at the edge of the rates tried ({_rates(tried)}), but "
            f"its Avg. Gap {choice['score']:.2f} is no better than the original model's "
            f"{original:.2f} (no unlearning): the range stops there.")


def _rates(rates: list) -> str:
    return ", ".join(f"{r:g}" for r in rates)


def with_rates(grid: dict, rates: dict[str, float]) -> dict:
    """``grid`` with each method of ``rates`` run at its rate, in every sub-grid it appears in."""
    def entry(m):
        name = m if isinstance(m, str) else m["method"]
        if name not in rates:
            return m
        return {**({} if isinstance(m, str) else m), "method": name, "lr": rates[name]}
    subgrids = grid["grids"] if "grids" in grid else [grid]
    missing = set(rates) - {m if isinstance(m, str) else m["method"]
                            for sub in subgrids for m in sub["methods"]}
    if missing:
        raise ValueError(f"The grid has no method {sorted(missing)}.")
    out = json.loads(json.dumps(grid))
    for sub in out["grids"] if "grids" in out else [out]:
        sub["methods"] = [entry(m) for m in sub["methods"]]
    return out


def write(path: Path, grid: dict) -> None:
    path.write_text(json.dumps(grid, indent=1) + "\n")
    print(f"wrote {path} ({len(expand(load_grid(path)))} configurations)")


if __name__ == "__main__":
    rules = {"authors": authors, "cifar": cifar, "fair": fair, "related": related}
    rule = sys.argv[1] if len(sys.argv) > 1 else "authors"
    if rule not in rules:
        sys.exit(f"Unknown rule {rule!r}; choose one of {sorted(rules)}.")
    rules[rule]()
