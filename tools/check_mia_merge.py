"""The merged SVM attack against SalUn's unmerged one, on real models (the Reproducibility page).

For each cpu-scale original and retrained model of Fashion-MNIST (seeds 0-2, random 10 % and
class 0) and for the models after each epoch of a few unlearning runs, it fits the attack of
``feasible.metrics.svm_member_rate`` twice per feature, merged (the default) and unmerged
(``merge=False``, SalUn's code), on the same members (the first |test| retain samples),
non-members (the test set) and target (the forget set), and writes every pair with both fit
times to ``results/checks/mia_merge.json`` (rewritten as rows land; a rerun skips the models
already there). Where the two differ by more than ``SOLVER_CHECK`` points, it also fits the
merged attack without rounding and the unmerged one at a tighter solver tolerance (1e-5 instead
of libsvm's 1e-3), to tell rounding from the solver's own tolerance; ``--recheck`` recomputes
the rows that lack these two.

    PYTHONPATH=. python tools/check_mia_merge.py [--features confidence,entropy,...] [--recheck]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.svm import SVC

from feasible.data import forget_split, load
from feasible.experiment import SCALES, write_record
from feasible.metrics import MIA_FEATURES, _outputs, attack_features, svm_member_rate
from feasible.paths import results_dir
from feasible.train import original_and_retrained
from feasible.unlearn import UnlearnConfig, unlearn

#: The difference (points) above which a row also gets the solver-tolerance fits.
SOLVER_CHECK = 0.25

RUNS = [UnlearnConfig(method="ngplus", lr=0.2, epochs=3), UnlearnConfig(method="srl", epochs=3),
        UnlearnConfig(method="srl", addon="prob", epochs=3),
        UnlearnConfig(method="rl", epochs=3)]


def sides(model: torch.nn.Module, data, split) -> dict[str, dict[str, torch.Tensor]]:
    """The attack's members, non-members and target features of ``model``."""
    x, y = data.x_train, data.y_train
    test_x, test_y = data.x_test[split.test_keep], data.y_test[split.test_keep]
    retain, forget = split.retain_idx, split.forget_idx
    n = min(len(test_y), len(retain))
    out = {}
    for name, (xs, ys) in {"member": (x[retain[:n]], y[retain[:n]]),
                           "non_member": (test_x[:n], test_y[:n]),
                           "target": (x[forget], y[forget])}.items():
        out[name] = attack_features(_outputs(model, xs, 512).probs, ys)
    return out


def unmerged_tight(member, non_member, target) -> float:
    """SalUn's unmerged attack with libsvm's stopping tolerance at 1e-5 (its default: 1e-3)."""
    arrays = [t.double().reshape(len(t), -1).numpy() for t in (member, non_member, target)]
    labels = np.concatenate([np.ones(len(arrays[0])), np.zeros(len(arrays[1]))])
    attack = SVC(C=3, gamma="auto", kernel="rbf", tol=1e-5)
    attack.fit(np.concatenate(arrays[:2]), labels)
    return 100.0 * float((attack.predict(arrays[2]) == 1).mean())


def compare(model, data, split, label: str, features, rows: list, path: Path) -> None:
    if any(row["model"] == label for row in rows):
        return
    s = sides(model, data, split)
    for feature in features:
        args = (s["member"][feature], s["non_member"][feature], s["target"][feature])
        start = time.perf_counter()
        full = svm_member_rate(*args, merge=False)
        full_s = time.perf_counter() - start
        start = time.perf_counter()
        merged = svm_member_rate(*args)
        merged_s = time.perf_counter() - start
        row = {"model": label, "feature": feature, "full": full, "merged": merged,
               "full_s": full_s, "merged_s": merged_s}
        if abs(full - merged) > SOLVER_CHECK:
            row["merged_unrounded"] = svm_member_rate(*args, resolution=None)
            row["full_tol_1e-5"] = unmerged_tight(*args)
        rows.append(row)
        print(f"{label:45s} {feature:12s} full {full:6.2f} merged {merged:6.2f} "
              f"({full_s:5.1f} s vs {merged_s:4.2f} s)", flush=True)
    write_record({"rows": rows}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=",".join(MIA_FEATURES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--recheck", action="store_true",
                        help="recompute the models with a row over SOLVER_CHECK lacking its fits")
    args = parser.parse_args()
    features = args.features.split(",")
    path = results_dir() / "checks" / "mia_merge.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    if args.recheck:
        redo = {r["model"] for r in rows
                if abs(r["full"] - r["merged"]) > SOLVER_CHECK and "full_tol_1e-5" not in r}
        rows = [r for r in rows if r["model"] not in redo]
    data = load("fashion_mnist", train_subset=SCALES["cpu"].train_subset["fashion_mnist"])
    for seed in map(int, args.seeds.split(",")):
        for scenario, kw in (("random", {"fraction": 0.1}), ("class", {"cls": 0})):
            split = forget_split(data, scenario, seed=seed, **kw)
            recipe = SCALES["cpu"].recipe("fashion_mnist", "small_cnn", seed)
            original, retrained, _ = original_and_retrained(data, split, recipe, device="cpu")
            if scenario == "random":
                compare(original, data, split, f"original seed {seed} ({scenario})", features,
                        rows, path)
            compare(retrained, data, split, f"retrained seed {seed} ({scenario})", features,
                    rows, path)
            if seed != 0 or scenario != "random":
                continue
            forget = (data.x_train[split.forget_idx], data.y_train[split.forget_idx])
            retain = (data.x_train[split.retain_idx], data.y_train[split.retain_idx])
            for cfg in RUNS:
                name = f"{cfg.method}+{cfg.addon} seed {seed} ({scenario})"
                if all(any(r["model"] == f"{name} epoch {e}" for r in rows)
                       for e in range(1, cfg.epochs + 1)):
                    continue

                def on_epoch(epoch, model, name=name):
                    compare(model, data, split, f"{name} epoch {epoch}", features, rows, path)
                    return {}

                unlearn(copy.deepcopy(original), forget, retain, cfg, num_classes=10,
                        on_epoch=on_epoch)


if __name__ == "__main__":
    main()
