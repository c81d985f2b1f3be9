"""What an add-on costs: seconds and peak memory per unlearning step, as ratios to the plain step.

Every measurement here is *side by side*: the variants of one (model, batch size) cell run in
alternation (A B C ... A B C ...), one step each, after one warm-up step each, and a variant's
cost is the median over rounds of its time divided by the plain step's time in the same round.
A background load that drifts during the run moves both members of a pair alike, so the
ratios hold where absolute times do not.

Three kinds of measurement (:func:`run` makes them all and :func:`write_json` records them):

- :func:`bench`: one unlearning step (:func:`feasible.unlearn.unlearn`, data handling, the
  add-on, the optimiser's step and the loop's statistics included) per add-on and noise model.
- :func:`epoch_cost`: one whole unlearning epoch (batches drawn, augmented, relabelled) against
  the pure forward and backward passes of the same batches, already on the device.
- :func:`evaluation_cost`: one :func:`feasible.metrics.evaluate` (accuracies and the SVM attack).

Peak memory (:func:`step_memory`): on CUDA, ``torch.cuda.max_memory_allocated`` over the step
(tensors only); on the CPU, the growth of the process's peak resident set (``ru_maxrss``) over
two steps of one variant in a fresh Python process, after the model and the data are built:
what the step adds to the process, allocator caching included.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Iterable, Sequence

import torch

from feasible._validate import resolve_device
from feasible.masks import ADDONS
from feasible.models import MODELS, build_model
from feasible.noise import NOISE_MODELS
from feasible.unlearn import UnlearnConfig, unlearn

#: The input shape (channels, image size) of each benchmark model, as the scales use it.
SHAPES: dict[str, tuple[int, int]] = {"mlp": (1, 28), "small_cnn": (1, 28), "resnet18": (3, 32),
                                      "vgg16_bn": (3, 32)}

#: The models and batch sizes of a full run (the issue's grid).
DEFAULT_MODELS: tuple[str, ...] = ("small_cnn", "resnet18", "vgg16_bn")
DEFAULT_BATCH_SIZES: tuple[int, ...] = (128, 256)

#: Widths used on the CPU unless given (the full models take seconds per step on one core);
#: ``None`` is the model's own default (:data:`feasible.models.DEFAULT_WIDTH`).
CPU_WIDTHS: dict[str, int] = {"resnet18": 16, "vgg16_bn": 16}

#: The targets of the issue as ratios to the plain step, for the elementwise add-ons with
#: ``ema`` noise, the add-ons that select by a per-tensor quantile, PROB and focus with
#: micro-batch noise, and a whole epoch against its pure forward and backward passes.
TARGETS: dict[str, float] = {"elementwise": 1.05, "quantile": 1.2, "microbatch": 1.3, "epoch": 1.2}

Variant = tuple[str, str]  # (add-on, noise model or "-" for an add-on that reads none)


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"The '{name}' parameter of bench must be an int >= {low}. "
                         f"Got {value!r} instead.")


def _check_names(what: str, values: Iterable[str], options: Iterable[str]) -> None:
    options = list(options)
    for value in values:
        if value not in options:
            raise ValueError(f"Unknown {what} {value!r}; expected one of "
                             f"{', '.join(repr(o) for o in options)}.")


def has_batchnorm(model: str) -> bool:
    """Whether the model has BatchNorm (then per-sample noise is undefined in the train-mode loop)."""
    channels, size = SHAPES[model]
    net = build_model(model, in_channels=channels, num_classes=10, image_size=size,
                      mean=(0.5,) * channels, std=(0.25,) * channels, width=1)
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def variants(model: str, addons: Sequence[str] = tuple(ADDONS),
             noises: Sequence[str] = tuple(NOISE_MODELS)) -> list[Variant]:
    """The (add-on, noise) pairs measured for a model, ``("none", "-")`` first.

    An add-on that reads no standard error (:attr:`feasible.masks.Addon.needs_se`) is measured
    once, with noise ``"-"``; the others once per noise model, ``"per_sample"`` only where it is
    defined (no BatchNorm: the loop runs in train mode, where BatchNorm couples the samples).
    """
    _check_names("model", [model], MODELS)
    _check_names("add-on", addons, ADDONS)
    _check_names("noise model", noises, NOISE_MODELS)
    out: list[Variant] = [("none", "-")]
    for addon in addons:
        if addon == "none":
            continue
        if not ADDONS[addon].needs_se:
            out.append((addon, "-"))
            continue
        for noise in noises:
            if noise == "per_sample" and has_batchnorm(model):
                continue
            out.append((addon, noise))
    return out


def _setup(model: str, batch_size: int, width: int | None, dev: torch.device, seed: int,
           n: int | None = None) -> tuple[torch.nn.Module, Any, Any]:
    """The model and two random uint8 sets (forget, retain) of ``n`` samples (one batch)."""
    channels, size = SHAPES[model]
    n = batch_size if n is None else n
    gen = torch.Generator().manual_seed(seed)
    sets = [(torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
             .to(dev), torch.randint(0, 10, (n,), generator=gen).to(dev)) for _ in range(2)]
    torch.manual_seed(seed)
    net = build_model(model, in_channels=channels, num_classes=10, image_size=size,
                      mean=(0.5,) * channels, std=(0.25,) * channels, width=width).to(dev)
    return net, sets[0], sets[1]


def _config(variant: Variant, method: str, batch_size: int, k: int, seed: int) -> UnlearnConfig:
    addon, noise = variant
    return UnlearnConfig(method=method, addon=addon, epochs=1, batch_size=batch_size,
                         noise="ema" if noise == "-" else noise, k=k, seed=seed, lr=1e-6)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench(
    model: str = "small_cnn",
    *,
    method: str = "ngplus",
    addons: Sequence[str] = tuple(ADDONS),
    noises: Sequence[str] = tuple(NOISE_MODELS),
    batch_size: int = 128,
    rounds: int = 5,
    k: int = 8,
    width: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Times one unlearning step of every (add-on, noise) variant, in alternation.

    Each call of :func:`feasible.unlearn.unlearn` on one batch of each set is one step (the
    loop's data handling, estimates, add-on, optimiser step and statistics); its epoch
    ``wall_time`` is the step's time. Every variant takes one warm-up step, then ``rounds``
    rounds run every variant once each, in the order of :func:`variants`, from the same
    parameters theta0. SalUn's one-off mask at theta0 is setup, not step (reported apart).

    Args:
        model: a name of :data:`feasible.models.MODELS`.
        method: the base method (its batching decides which gradients ``"none"`` computes).
        addons: the add-ons to time; ``"none"`` is always timed, as the reference.
        noises: the noise models of the add-ons that read one.
        batch_size: the batch size, >= 2.
        rounds: rounds of alternation, >= 1.
        k: micro-batches for ``"microbatch"`` noise, in [2, batch_size].
        width: the model's width (``None``: its default).
        device: ``None`` (cuda if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        seed: seeds the data, the model and the loop.

    Returns:
        A data frame, one row per variant, with ``addon``, ``noise``, ``step_s`` (median
        seconds per step), ``ratio`` (median over rounds of step / plain step of the same
        round), ``ratio_min`` and ``ratio_max`` (their range), ``setup_s`` (median seconds
        before the first step).

    Raises:
        ValueError: an unknown model, method, add-on, noise model or device, or a bad size.
    """
    todo = variants(model, addons, noises)
    _check_int("batch_size", batch_size, 2)
    _check_int("rounds", rounds, 1)
    _check_int("k", k, 2)
    if k > batch_size:
        raise ValueError(f"The 'k' parameter of bench must be an int in [2, batch_size="
                         f"{batch_size}]. Got {k!r} instead.")
    if width is not None:
        _check_int("width", width, 1)
    configs = {v: _config(v, method, batch_size, k, seed) for v in todo}  # validates method
    dev = resolve_device(device)
    net, forget, retain = _setup(model, batch_size, width, dev, seed)
    theta0 = {name: t.clone() for name, t in net.state_dict().items()}
    times: dict[Variant, list[float]] = {v: [] for v in todo}
    setups: dict[Variant, list[float]] = {v: [] for v in todo}
    for r in range(rounds + 1):  # round 0 warms up every variant
        for v, cfg in configs.items():
            net.load_state_dict(theta0)
            _sync(dev)
            result = unlearn(net, forget, retain, cfg, num_classes=10)
            _sync(dev)
            if r:
                epoch = result.epochs[0]
                times[v].append(epoch["wall_time"] / epoch["steps"])
                setups[v].append(result.setup_time)
    base = times[todo[0]]
    rows = []
    for v in todo:
        ratios = [t / b for t, b in zip(times[v], base)]
        rows.append({"addon": v[0], "noise": v[1], "step_s": statistics.median(times[v]),
                     "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                     "ratio_max": max(ratios), "setup_s": statistics.median(setups[v])})
    return rows


# --- peak memory -------------------------------------------------------------------------------

def _rss_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _memory_child(spec: dict[str, Any]) -> float:
    """In this (fresh) process: MiB the step adds to the peak, over the model and data.

    On the CPU the peak resident set is reset (``/proc/self/clear_refs``, Linux) after the
    model and data are built, then the step's peak ``VmHWM`` is read against ``VmRSS`` before.
    """
    torch.set_num_threads(spec["threads"])
    dev = resolve_device(spec["device"])
    net, forget, retain = _setup(spec["model"], spec["batch_size"], spec["width"], dev,
                                 spec["seed"])
    cfg = _config(tuple(spec["variant"]), spec["method"], spec["batch_size"], spec["k"],
                  spec["seed"])
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev) / 2**20
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident set size (Linux >= 4.0)
        before = _rss_mib("VmRSS")
    unlearn(net, forget, retain, cfg, num_classes=10)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) / 2**20 - before
    return _rss_mib("VmHWM") - before


def step_memory(model: str, variant: Variant, *, method: str = "ngplus", batch_size: int = 128,
                k: int = 8, width: int | None = None, device: str | None = None,
                seed: int = 0, threads: int = 1) -> float:
    """Peak memory one step of ``variant`` adds, in MiB, measured in a fresh Python process.

    See the module's docstring for what is measured on each device.
    """
    spec = {"model": model, "variant": list(variant), "method": method,
            "batch_size": batch_size, "k": k, "width": width, "device": device, "seed": seed,
            "threads": threads}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-m", "feasible.bench", json.dumps(spec)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"The memory probe of {model} {variant} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


# --- an epoch and an evaluation ----------------------------------------------------------------

def epoch_cost(model: str = "small_cnn", *, method: str = "ngplus", batch_size: int = 128,
               batches: int = 4, rounds: int = 2, width: int | None = None,
               augment: str = "crop_flip", device: str | torch.device | None = None,
               seed: int = 0) -> dict[str, Any]:
    """One whole plain unlearning epoch against its pure forward and backward passes.

    The epoch: :func:`feasible.unlearn.unlearn` (add-on ``"none"``) over a retain set of
    ``batches`` batches (the forget set as large), data kept as uint8 tensors on the device,
    augmentation ``augment`` batched on the device. The reference: the same number of forward
    and backward passes (one per set per step, as the method's plain step computes) on batches
    already drawn, normalised by the model and on the device, with no update. In alternation,
    ``rounds`` times each (call it after a warm-up of the same model, as :func:`run` does).

    Returns:
        ``epoch_s``, ``pure_s`` (medians), ``ratio`` (median of the per-round ratios),
        ``steps``, ``batch_size``, ``augment``.
    """
    _check_int("batch_size", batch_size, 2)
    _check_int("batches", batches, 1)
    _check_int("rounds", rounds, 1)
    dev = resolve_device(device)
    n = batch_size * batches
    net, forget, retain = _setup(model, batch_size, width, dev, seed, n=n)
    cfg = UnlearnConfig(method=method, addon="none", epochs=1, batch_size=batch_size,
                        seed=seed, lr=1e-6)
    theta0 = {name: t.clone() for name, t in net.state_dict().items()}
    params = [p for p in net.parameters() if p.requires_grad]
    loss = torch.nn.functional.cross_entropy
    pairs = [(forget[0][i:i + batch_size], forget[1][i:i + batch_size],
              retain[0][i:i + batch_size], retain[1][i:i + batch_size])
             for i in range(0, n, batch_size)]

    def pure() -> float:
        _sync(dev)
        t0 = time.perf_counter()
        for xf, yf, xr, yr in pairs:
            for x, y in ((xf, yf), (xr, yr)):
                torch.autograd.grad(loss(net(x), y), params)
        _sync(dev)
        return time.perf_counter() - t0

    epochs: list[float] = []
    pures: list[float] = []
    steps = 0
    net.train()
    for _ in range(rounds):
        net.load_state_dict(theta0)
        result = unlearn(net, forget, retain, cfg, num_classes=10, augment_policy=augment)
        pures.append(pure())
        epochs.append(result.epochs[0]["wall_time"])
        steps = result.epochs[0]["steps"]
    return {"epoch_s": statistics.median(epochs), "pure_s": statistics.median(pures),
            "ratio": statistics.median(e / p for e, p in zip(epochs, pures)), "steps": steps,
            "batch_size": batch_size, "augment": augment}


def evaluation_cost(model: str = "small_cnn", *, sizes: tuple[int, int, int] = (500, 2000, 1000),
                    width: int | None = None, device: str | torch.device | None = None,
                    seed: int = 0, rounds: int = 2) -> dict[str, Any]:
    """Seconds of one :func:`feasible.metrics.evaluate` (UA, RA, TA and SalUn's SVM attack),
    with its forward passes in channels-last layout (the default) and without, alternated.

    ``sizes`` are the forget, retain and test set sizes (random images; the attack fits on
    ``min(|retain|, |test|)`` members and as many non-members). Returns the medians over
    ``rounds`` of each: ``eval_s`` (the default) and ``eval_plain_s``, and ``layout_ratio``, their
    ratio.
    """
    from feasible.metrics import evaluate

    _check_int("rounds", rounds, 1)
    dev = resolve_device(device)
    channels, size = SHAPES[model]
    gen = torch.Generator().manual_seed(seed)
    sets = [(torch.randint(0, 256, (m, channels, size, size), generator=gen, dtype=torch.uint8)
             .to(dev), torch.randint(0, 10, (m,), generator=gen).to(dev)) for m in sizes]
    net, _, _ = _setup(model, 2, width, dev, seed, n=2)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for fast in (True, False):
            _sync(dev)
            t0 = time.perf_counter()
            evaluate(net, forget=sets[0], retain=sets[1], test=sets[2], fast_layout=fast)
            _sync(dev)
            times[fast].append(time.perf_counter() - t0)
    fast, plain = (statistics.median(times[k]) for k in (True, False))
    return {"eval_s": fast, "eval_plain_s": plain, "layout_ratio": fast / plain,
            "forget": sizes[0], "retain": sizes[1], "test": sizes[2]}


def selection_cost(model: str = "small_cnn", *, width: int | None = None, rounds: int = 5,
                   fraction: float = 0.5, device: str | torch.device | None = None,
                   seed: int = 0) -> dict[str, float]:
    """Seconds to find every tensor's ``salun_step`` threshold, per selection method.

    Random magnitudes shaped like the model's trainable parameters; each method of
    :data:`feasible.masks.QUANTILE_SELECTIONS` (full sort, ``torch.kthvalue``, ``torch.topk``)
    finds the same per-tensor midpoint quantile, in alternation, ``rounds`` times after one
    warm-up. Returns the median seconds per method (all tensors of one step).
    """
    from feasible.masks import QUANTILE_SELECTIONS, _quantile_threshold

    _check_int("rounds", rounds, 1)
    dev = resolve_device(device)
    net, _, _ = _setup(model, 2, width, dev, seed, n=2)
    gen = torch.Generator().manual_seed(seed)
    flats = [torch.rand(p.numel(), generator=gen).to(dev) for p in net.parameters()
             if p.requires_grad]
    times: dict[str, list[float]] = {h: [] for h in QUANTILE_SELECTIONS}
    for r in range(rounds + 1):
        for how in QUANTILE_SELECTIONS:
            _sync(dev)
            t0 = time.perf_counter()
            for flat in flats:
                _quantile_threshold(flat, 1.0 - fraction, how)
            _sync(dev)
            if r:
                times[how].append(time.perf_counter() - t0)
    return {how: statistics.median(t) for how, t in times.items()}


# --- a whole run -------------------------------------------------------------------------------

def environment(device: torch.device) -> dict[str, Any]:
    """Torch version, threads, CPU model, git commit and (on CUDA) the GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = {"torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "cpu": cpu, "cpus": os.cpu_count(),
           "device": str(device), "host_kind": "cpu" if device.type == "cpu" else device.type,
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    try:  # the code measured, where this is a git checkout
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["host_kind"] = "cuda-" + env["gpu"].lower().replace("nvidia", "").strip().replace(
            " ", "-")
    return env


def run(
    models: Sequence[str] = DEFAULT_MODELS,
    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
    *,
    method: str = "ngplus",
    addons: Sequence[str] = tuple(ADDONS),
    noises: Sequence[str] = tuple(NOISE_MODELS),
    rounds: int = 5,
    k: int = 8,
    widths: dict[str, int | None] | None = None,
    device: str | None = None,
    threads: int | None = None,
    memory: bool = True,
    epoch: bool = True,
    evaluation: bool = True,
    seed: int = 0,
    log: Any = None,
    out_path: str | None = None,
) -> dict[str, Any]:
    """Every measurement of the benchmark, as one JSON-ready dict.

    ``widths`` maps a model to its width (missing: :data:`CPU_WIDTHS` on the CPU, else the
    model's default). All options are checked before anything runs. With ``out_path`` (a path
    or ``"auto"``, see :func:`write_json`) the result so far is written after each model, so
    that a run stopped early leaves what it measured (``"complete": false`` until the end).
    """
    _check_names("model", models, MODELS)
    for b in batch_sizes:
        _check_int("batch_size", b, 2)
        if k > b:
            raise ValueError(f"The 'k' parameter of bench must be an int in [2, batch_size={b}]."
                             f" Got {k!r} instead.")
    _check_int("rounds", rounds, 1)
    _check_int("k", k, 2)
    if threads is not None:
        _check_int("threads", threads, 1)
    widths = dict(widths or {})
    _check_names("model", widths, MODELS)
    for name, w in widths.items():
        if w is not None:
            _check_int(f"width of {name}", w, 1)
    dev = resolve_device(device)
    for m in models:
        variants(m, addons, noises)
    _config(("none", "-"), method, max(batch_sizes), k, seed)
    if threads is not None:
        torch.set_num_threads(threads)
    if dev.type == "cpu":
        widths = {**{m: w for m, w in CPU_WIDTHS.items()}, **widths}
    say = log or (lambda *_: None)
    out: dict[str, Any] = {"environment": environment(dev), "method": method, "k": k,
                           "rounds": rounds, "targets": TARGETS, "steps": [], "epochs": [],
                           "evaluations": [], "selections": [], "memory": "cuda max_memory_allocated over two "
                           "step" if dev.type == "cuda" else "peak resident set (VmHWM, reset before) over "
                           "the resident set before one step, in a fresh process, after model "
                           "and data (Linux)"}
    started = time.perf_counter()
    out["complete"] = False
    for m in models:
        width = widths.get(m)
        for b in batch_sizes:
            say(f"{m} batch {b} (width {width or 'default'}): steps")
            rows = bench(m, method=method, addons=addons, noises=noises, batch_size=b,
                         rounds=rounds, k=k, width=width, device=str(dev), seed=seed)
            for row in rows:
                row.update(model=m, batch_size=b, width=width)
                if memory and b == max(batch_sizes):
                    row["peak_mib"] = step_memory(m, (row["addon"], row["noise"]), method=method,
                                                  batch_size=b, k=k, width=width,
                                                  device=str(dev), seed=seed,
                                                  threads=torch.get_num_threads())
            if memory and b == max(batch_sizes):
                base = rows[0]["peak_mib"]
                for row in rows:
                    row["peak_ratio"] = row["peak_mib"] / base if base > 0 else None
            out["steps"].extend(rows)
            if epoch and b == min(batch_sizes):
                say(f"{m} batch {b}: epoch")
                out["epochs"].append({"model": m, "width": width,
                                      **epoch_cost(m, method=method, batch_size=b, width=width,
                                                   rounds=2, device=str(dev),
                                                   seed=seed)})
        say(f"{m}: per-tensor quantile selection")
        out["selections"].append({"model": m, "width": width,
                                  **selection_cost(m, width=width, device=str(dev), seed=seed)})
        if evaluation:
            say(f"{m}: evaluation")
            out["evaluations"].append({"model": m, "width": width,
                                       **evaluation_cost(m, width=width, device=str(dev),
                                                         seed=seed)})
        out["wall_s"] = time.perf_counter() - started
        if out_path is not None:
            write_json(out, out_path)
    out["complete"] = True
    if out_path is not None:
        write_json(out, out_path)
    return out


def target_of(addon: str, noise: str) -> float | None:
    """The issue's target ratio for a variant (``None``: no target)."""
    if addon in ("opt", "focus_opt", "salun_step"):
        return TARGETS["quantile"]
    if addon in ("and", "salun") or (addon in ("prob", "focus") and noise == "ema"):
        return TARGETS["elementwise"]
    if addon in ("prob", "focus") and noise == "microbatch":
        return TARGETS["microbatch"]
    return None


def format_table(result: dict[str, Any]) -> str:
    """The side-by-side table of a :func:`run`: per model and batch, every variant's ratios."""
    env = result["environment"]
    lines = [f"torch {env['torch']}, {env['threads']} thread(s), {env['cpu']}, device "
             f"{env['device']}; method {result['method']}, k={result['k']}, "
             f"{result['rounds']} rounds in alternation (medians)"]
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in result["steps"]:
        cells.setdefault((row["model"], row["batch_size"]), []).append(row)
    for (m, b), rows in cells.items():
        lines.append(f"\n{m} (width {rows[0]['width'] or 'default'}), batch {b}: plain step "
                     f"{rows[0]['step_s'] * 1e3:.1f} ms")
        lines.append(f"  {'add-on':10s}{'noise':12s}{'x none':>8s}{'range':>14s}{'target':>8s}"
                     f"{'peak MiB':>10s}{'x none':>8s}")
        for row in rows:
            target = target_of(row["addon"], row["noise"])
            verdict = "" if target is None else f"{target:.2f}{'' if row['ratio'] <= target else '!'}"
            ratio = row.get("peak_ratio")
            mem = (f"{row['peak_mib']:10.1f}" + (f"{ratio:8.2f}" if ratio else f"{'-':>8s}")
                   if "peak_mib" in row else "")
            lines.append(f"  {row['addon']:10s}{row['noise']:12s}{row['ratio']:8.2f}"
                         f"{row['ratio_min']:7.2f}-{row['ratio_max']:<6.2f}{verdict:>8s}{mem}")
    for e in result["epochs"]:
        lines.append(f"epoch {e['model']} batch {e['batch_size']} ({e['steps']} steps, "
                     f"{e['augment']}): {e['epoch_s']:.2f} s vs pure forward/backward "
                     f"{e['pure_s']:.2f} s = {e['ratio']:.2f}x")
    for e in result.get("selections", []):
        times = ", ".join(f"{h} {e[h] * 1e3:.1f} ms" for h in e if h not in ("model", "width"))
        lines.append(f"per-tensor quantile of {e['model']} (all tensors): {times}")
    for e in result["evaluations"]:
        plain = (f" vs {e['eval_plain_s']:.2f} s with contiguous weights = "
                 f"{e['layout_ratio']:.2f}x" if "eval_plain_s" in e else "")  # older files: none
        lines.append(f"evaluation {e['model']} (forget {e['forget']}, retain {e['retain']}, test "
                     f"{e['test']}): {e['eval_s']:.2f} s{plain}")
    lines.append(f"('!': over its target; wall time {result.get('wall_s', 0):.0f} s)")
    return "\n".join(lines)


def default_path(result: dict[str, Any]) -> str:
    """``results/bench/<host kind>.json``: ``cpu-<CPU model>-<N>cores`` or ``cuda-<GPU>``."""
    import re

    env = result["environment"]
    if env["device"].startswith("cuda"):
        kind = env["host_kind"]
    else:
        model = re.sub(r"\(r\)|\(tm\)|processor|cpu|@.*", "", env["cpu"].lower())
        words = re.findall(r"[a-z0-9]+", model)[:3]
        kind = "-".join(["cpu", *words, f"{env['cpus']}cores"])
    return f"results/bench/{kind}.json"


def write_json(result: dict[str, Any], path: str | os.PathLike) -> str:
    """Writes a :func:`run`'s result (indented, sorted keys), creating the folder.

    ``path="auto"`` is :func:`default_path`. Returns the path written.
    """
    from pathlib import Path

    path = Path(default_path(result) if str(path) == "auto" else path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return str(path)


if __name__ == "__main__":  # the memory probe of step_memory
    print(_memory_child(json.loads(sys.argv[1])))


# --- reading committed measurements (the Cost page) --------------------------------------------

#: Targets by group, with the variants each covers, for the page's verdicts.
TARGET_GROUPS: dict[str, str] = {
    "elementwise": "AND, SalUn, PROB and focus with ema noise",
    "quantile": "opt, focus_opt and salun_step",
    "microbatch": "PROB and focus with micro-batch noise",
    "epoch": "a whole plain epoch against its pure forward/backward passes",
}


def _group_of(addon: str, noise: str) -> str | None:
    target = target_of(addon, noise)
    if target is None:
        return None
    if addon in ("opt", "focus_opt", "salun_step"):
        return "quantile"
    return "microbatch" if noise == "microbatch" else "elementwise"


def load(pattern: str = "results/bench/*.json",
         root: str | os.PathLike | None = None) -> list[dict]:
    """The committed benchmark results matching ``pattern`` (under ``root``, by default the
    repository root ``feasible.paths.ROOT``, whatever the working directory), sorted.

    Raises:
        FileNotFoundError: no file matches.
    """
    from pathlib import Path

    from feasible.paths import ROOT

    root = ROOT if root is None else Path(root)
    paths = sorted(root.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"No benchmark result matches {pattern!r} under {root}; run "
                                "`make bench` (or python -m feasible bench --out auto).")
    out = []
    for path in paths:
        result = json.loads(path.read_text())
        result["path"] = str(path)
        result["host"] = path.stem
        out.append(result)
    return out


def steps_table(results: Sequence[dict]) -> Any:
    """One row per (host, model, batch size, add-on, noise): ratios, memory, target, verdict.

    ``over`` is the ratio minus its target (> 0: missed by that much); ``met`` is ``ratio <=
    target``; variants without a target have ``None``.
    """
    import pandas as pd

    rows = []
    for result in results:
        for row in result["steps"]:
            target = target_of(row["addon"], row["noise"])
            rows.append({"host": result["host"], **row,
                         "variant": row["addon"] + ("" if row["noise"] == "-"
                                                    else f" ({row['noise']})"),
                         "group": _group_of(row["addon"], row["noise"]), "target": target,
                         "over": None if target is None else row["ratio"] - target,
                         "met": None if target is None else bool(row["ratio"] <= target)})
    return pd.DataFrame(rows)


def verdicts(table: Any, epochs: Any = None) -> Any:
    """Per host and target group: how many variants meet the target, and the worst miss.

    ``epochs`` (:func:`epochs_table`) adds the epoch target's row.
    """
    import pandas as pd

    rows = []
    for (host, group), part in table.dropna(subset=["group"]).groupby(["host", "group"],
                                                                        sort=False):
        worst = part.loc[part.ratio.idxmax()]
        rows.append({"host": host, "target": f"{TARGET_GROUPS[group]}: <= {TARGETS[group]}x",
                     "met": f"{int(part.met.sum())} of {len(part)}",
                     "worst": f"{worst.variant}, {worst.model} batch {worst.batch_size}: "
                              f"{worst.ratio:.2f}x",
                     "over by": max(0.0, float(worst.ratio - TARGETS[group]))})
    if epochs is not None:
        for host, part in epochs.groupby("host", sort=False):
            worst = part.loc[part.ratio.idxmax()]
            rows.append({"host": host, "target": f"{TARGET_GROUPS['epoch']}: <= "
                                                 f"{TARGETS['epoch']}x",
                         "met": f"{int((part.ratio <= TARGETS['epoch']).sum())} of {len(part)}",
                         "worst": f"{worst.model} batch {worst.batch_size}: {worst.ratio:.2f}x",
                         "over by": max(0.0, float(worst.ratio - TARGETS["epoch"]))})
    return pd.DataFrame(rows)


def epochs_table(results: Sequence[dict]) -> Any:
    """One row per measured epoch and evaluation: seconds and ratio (epochs), seconds (evals)."""
    import pandas as pd

    rows = [{"host": r["host"], **e} for r in results for e in r["epochs"]]
    evals = {(r["host"], e["model"]): e["eval_s"] for r in results for e in r["evaluations"]}
    table = pd.DataFrame(rows)
    if len(table):
        table["eval_s"] = [evals.get((h, m)) for h, m in zip(table.host, table.model)]
    return table


def selections_table(results: Sequence[dict]) -> Any:
    """Per host and model: seconds of every tensor's quantile by sort, kthvalue and topk."""
    import pandas as pd

    return pd.DataFrame([{"host": r["host"], **s} for r in results
                         for s in r.get("selections", [])])


def plot_ratios(table: Any, host: str, *, column: str = "ratio", axes: Any = None) -> Any:
    """One panel per model: each variant's ratio per batch size, with the targets as lines.

    ``column="peak_ratio"`` draws peak memory instead (no targets). The whiskers of step ratios
    are the range over rounds.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    part = table[table.host == host]
    models = list(dict.fromkeys(part.model))
    if axes is None:
        _, axes = plt.subplots(len(models), 1, figsize=(9, 2.9 * len(models)), squeeze=False)
        axes = axes[:, 0]
    sizes = sorted(set(part.batch_size))
    for ax, model in zip(axes, models):
        cell = part[part.model == model]
        names = list(dict.fromkeys(cell.variant))
        x = np.arange(len(names))
        drawn = [b for b in sizes if cell[cell.batch_size == b][column].notna().any()]
        width = 0.8 / max(1, len(drawn))
        for i, b in enumerate(drawn):
            rows = cell[cell.batch_size == b].set_index("variant").reindex(names)
            values = rows[column].to_numpy(dtype=float)
            err = None
            if column == "ratio":
                err = np.vstack([values - rows.ratio_min.to_numpy(dtype=float),
                                 rows.ratio_max.to_numpy(dtype=float) - values])
            ax.bar(x + (i - (len(drawn) - 1) / 2) * width, values, width, yerr=err,
                   capsize=2, label=f"batch {b}", error_kw={"lw": 0.8})
        if column == "ratio":
            for group, style in zip(("elementwise", "quantile", "microbatch"), (":", "--", "-.")):
                ax.axhline(TARGETS[group], color="k", ls=style, lw=0.9,
                           label=f"target {TARGETS[group]}x")
            ax.set_yscale("log")
            ax.set_yticks([0.8, 1, 1.2, 1.5, 2, 3, 5, 8], ["0.8", "1", "1.2", "1.5", "2", "3",
                                                          "5", "8"])
            ax.set_ylim(0.7, max(1.6, float(np.nanmax(cell.ratio_max)) * 1.15))
            ax.yaxis.set_minor_formatter(plt.NullFormatter())
        ax.axhline(1.0, color="grey", lw=0.6)
        w = cell.width.iloc[0]
        ax.set_title(f"{model} (width {'default' if w is None or w != w else int(w)})",
                     fontsize=10)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("x plain step" if column == "ratio" else "x plain step's peak")
        ax.legend(fontsize=7, ncol=6, loc="upper left")
    plt.tight_layout()
    return axes


def se_agreement(model: str = "small_cnn", *, width: int | None = None, batch_size: int = 256,
                 k: int = 8, seed: int = 0) -> dict[str, float]:
    """Micro-batch standard errors (``k`` chunks) against the exact per-sample ones.

    One random batch, the model in eval mode (per-sample gradients exist without batch
    statistics), both from :func:`feasible.noise.grad_stats` (fast paths). Over coordinates
    where the exact error is > 0: the median of ``se_micro / se_exact`` and the median of
    ``|se_micro / se_exact - 1|``. With ``k`` chunks a single coordinate's estimate scatters by
    about ``1 / sqrt(2 (k - 1))``; the median ratio tells the bias.
    """
    import torch.nn.functional as F

    from feasible.noise import grad_stats

    net, forget, _ = _setup(model, batch_size, width, torch.device("cpu"), seed)
    net.eval()
    micro = grad_stats(net, F.cross_entropy, *forget, method="microbatch", k=k)
    exact = grad_stats(net, F.cross_entropy, *forget, method="per_sample")
    a = torch.cat([micro.se[n].reshape(-1) for n in exact.se])
    b = torch.cat([exact.se[n].reshape(-1) for n in exact.se])
    ratio = a[b > 0] / b[b > 0]
    return {"model": model, "width": width, "batch_size": batch_size, "k": k,
            "median_ratio": float(ratio.median()),
            "median_abs_error": float((ratio - 1).abs().median())}
