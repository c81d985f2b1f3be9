"""Tests of feasible.masks: hand-worked examples, a naive reference, Props. 4-7, the OPT
certificate, saliency masks, the add-on registry, validation."""
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import feasible
from feasible import masks
from feasible.masks import FOCUS_VARIANTS, Update, feasible_update

F64 = torch.float64
PROPERTY = settings(max_examples=60, deadline=None)


# ------------------------------------------------------------------------------------------
# A separate naive implementation, one Python float at a time.
# ------------------------------------------------------------------------------------------


def naive_phi(g, s):
    if s == 0:
        return 1.0 if g > 0 else (0.0 if g < 0 else 0.5)
    return 0.5 * math.erfc(-g / s / math.sqrt(2.0))


def naive_probability(gu, gc, su, sc):
    a, b = naive_phi(gu, su), naive_phi(gc, sc)
    return a * b + (1 - a) * (1 - b)


def naive_min(gu, gc, alpha, beta):
    return alpha * gu if abs(alpha * gu) <= abs(beta * gc) else beta * gc


def naive_signed(gu, gc, su, sc):
    return naive_phi(gu, su) + naive_phi(gc, sc) - 1.0


def naive_soft(gu, gc, su, sc, p):
    return min(max((naive_probability(gu, gc, su, sc) - p) / (1 - p), 0.0), 1.0)


def t(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


# ------------------------------------------------------------------------------------------
# Strategies: vectors with zeros, tiny and large values; standard errors with zeros.
# ------------------------------------------------------------------------------------------

_value = st.one_of(
    st.just(0.0),
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
    st.floats(-1e-30, 1e-30, allow_nan=False),
)
_se = st.one_of(st.just(0.0), st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False))


@st.composite
def quads(draw, min_size=1, max_size=12):
    """(g_u, g_c, se_u, se_c) as float64 tensors of one random length."""
    n = draw(st.integers(min_size, max_size))
    vec = lambda elements: t(draw(st.lists(elements, min_size=n, max_size=n)))  # noqa: E731
    return vec(_value), vec(_value), vec(_se), vec(_se)


probabilities = st.floats(0.01, 0.99)


# ------------------------------------------------------------------------------------------
# 4-coordinate examples worked by hand (alpha = 0.8, beta = 0.5 as in Figs. 1-2).
# ------------------------------------------------------------------------------------------

G_U, G_C = [1.0, -2.0, 0.5, 0.0], [2.0, 1.0, -0.25, 3.0]
SE_U, SE_C = [1.0, 1.0, 0.0, 2.0], [0.0, 2.0, 0.5, 1.0]
# phi_u = [Phi(1), Phi(-2), 1 (se = 0, g > 0), 1/2 (g = 0)]
# phi_c = [1 (se = 0, g > 0), Phi(0.5), Phi(-0.5), Phi(3)]
PHI_U = [0.8413447460685429, 0.02275013194817921, 1.0, 0.5]
PHI_C = [1.0, 0.6914624612740131, 0.3085375387259869, 0.9986501019683699]
P_HAND = [0.8413447460685429, 0.3172491312402008, 0.3085375387259869, 0.5]


def test_hand_worked_aggregators_and_and_mask():
    gu, gc = t(G_U), t(G_C)
    # linG: 0.8*1 + 0.5*2, 0.8*(-2) + 0.5*1, 0.8*0.5 - 0.5*0.25, 0 + 0.5*3
    assert torch.allclose(feasible.lin_g(gu, gc, 0.8, 0.5), t([1.8, -1.1, 0.275, 1.5]))
    # MinG: |0.8| <= |1.0| -> 0.8; |-1.6| > |0.5| -> 0.5; |0.4| > |-0.125| -> -0.125; 0 <= 1.5 -> 0
    assert torch.allclose(feasible.min_g(gu, gc, 0.8, 0.5), t([0.8, 0.5, -0.125, 0.0]))
    assert feasible.and_mask(gu, gc).tolist() == [True, False, False, False]
    # MinG ties go to g_u: |1| == |-1| -> 1; |-2| == |2| -> -2.
    assert feasible.min_g(t([1.0, -2.0]), t([-1.0, 2.0])).tolist() == [1.0, -2.0]


def test_hand_worked_probabilities_masks_and_focus():
    gu, gc, su, sc = t(G_U), t(G_C), t(SE_U), t(SE_C)
    assert torch.allclose(feasible.phi(gu, su), t(PHI_U), atol=1e-12)
    assert torch.allclose(feasible.phi(gc, sc), t(PHI_C), atol=1e-12)
    assert torch.allclose(feasible.agreement_probability(gu, gc, su, sc), t(P_HAND), atol=1e-12)
    # P = [0.84, 0.32, 0.31, 0.5]: p = 0.45 and p = 0.5 keep 0 and 3 (P = 1/2 at g_u = 0);
    # p = 0.55 keeps only 0.
    assert feasible.prob_mask(gu, gc, su, sc, 0.45).tolist() == [True, False, False, True]
    assert feasible.prob_mask(gu, gc, su, sc, 0.5).tolist() == [True, False, False, True]
    assert feasible.prob_mask(gu, gc, su, sc, 0.55).tolist() == [True, False, False, False]
    # The authors' focus vector is P itself.
    assert torch.allclose(feasible.focus(gu, gc, su, sc), t(P_HAND), atol=1e-12)
    f = [a + b - 1 for a, b in zip(PHI_U, PHI_C)]  # [0.841, -0.286, 0.309, 0.499]
    assert torch.allclose(feasible.focus(gu, gc, su, sc, variant="signed"), t(f), atol=1e-12)
    w = [(0.8413447460685429 - 0.45) / 0.55, 0.0, 0.0, 0.05 / 0.55]
    assert torch.allclose(feasible.focus(gu, gc, su, sc, variant="soft"), t(w), atol=1e-12)


def test_hand_worked_update_per_addon():
    gu, gc, su, sc = t(G_U), t(G_C), t(SE_U), t(SE_C)
    a = [1.8, -1.1, 0.275, 1.5]
    sal = torch.tensor([False, True, True, False])
    fa = [x * f for x, f in zip(a, P_HAND)]  # [1.514, -0.349, 0.0848, 0.75]
    # OPT: products g_u * g_c = [2, -2, -0.125, 0]; <a, g_u> = 1.8 + 2.2 + 0.1375 = 4.1375 >= 0
    # and <a, g_c> = 3.6 - 1.1 - 0.06875 + 4.5 = 6.93 >= 0: nothing is cut.
    # focus_opt: <f a, g_u> = 1.514 + 0.698 + 0.042 > 0, <f a, g_c> = 3.028 - 0.349 - 0.021
    # + 2.25 > 0: nothing is cut either.
    expected = {
        "none": ([1.8, -1.1, 0.275, 1.5], [True] * 4),
        "salun": ([0.0, -1.1, 0.275, 0.0], [False, True, True, False]),
        "salun_step": ([0.0, -1.1, 0.275, 0.0], [False, True, True, False]),
        "and": ([1.8, 0.0, 0.0, 0.0], [True, False, False, False]),
        "prob": ([1.8, 0.0, 0.0, 1.5], [True, False, False, True]),
        "focus": (fa, [True] * 4),
        "opt": ([1.8, -1.1, 0.275, 1.5], [True] * 4),
        "focus_opt": (fa, [True] * 4),
    }
    assert set(expected) == set(feasible.ADDONS)
    for addon, (direction, keep) in expected.items():
        update = feasible_update(gu, gc, su, sc, addon=addon, alpha=0.8, beta=0.5,
                                 saliency=sal)
        assert isinstance(update, Update)
        assert torch.allclose(update.direction, t(direction), atol=1e-12), addon
        assert update.keep.dtype == torch.bool and update.keep.tolist() == keep, addon


# ------------------------------------------------------------------------------------------
# The library against the naive reference, on random inputs.
# ------------------------------------------------------------------------------------------


@PROPERTY
@given(quads(), st.floats(0.0, 3.0), st.floats(0.0, 3.0), probabilities)
def test_matches_naive_reference(q, alpha, beta, p):
    gu, gc, su, sc = q
    rows = list(zip(gu.tolist(), gc.tolist(), su.tolist(), sc.tolist()))
    close = lambda x, y: torch.allclose(x, t(y), rtol=1e-9, atol=1e-12)  # noqa: E731
    assert close(feasible.lin_g(gu, gc, alpha, beta), [alpha * a + beta * b for a, b, _, _ in rows])
    assert close(feasible.min_g(gu, gc, alpha, beta),
                 [naive_min(a, b, alpha, beta) for a, b, _, _ in rows])
    assert feasible.and_mask(gu, gc).tolist() == [(a > 0 and b > 0) or (a < 0 and b < 0)
                                                  for a, b, _, _ in rows]
    assert close(feasible.phi(gu, su), [naive_phi(a, s) for a, _, s, _ in rows])
    probs = [naive_probability(*row) for row in rows]
    assert close(feasible.agreement_probability(gu, gc, su, sc), probs)
    assert close(feasible.focus(gu, gc, su, sc), probs)
    assert close(feasible.focus(gu, gc, su, sc, variant="signed"),
                 [naive_signed(*row) for row in rows])
    assert close(feasible.focus(gu, gc, su, sc, variant="soft", p=p),
                 [naive_soft(*row, p) for row in rows])
    mask = feasible.prob_mask(gu, gc, su, sc, p).tolist()
    for kept, prob in zip(mask, probs):
        if abs(prob - p) > 1e-9:  # away from the threshold, where rounding may decide
            assert kept == (prob >= p)


# ------------------------------------------------------------------------------------------
# Prop. 4: P equals the Monte-Carlo frequency of sign agreement.
# ------------------------------------------------------------------------------------------


def test_prop4_probability_matches_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    gu, gc = t([0.3, -1.0, 0.05, 2.0, 0.0, -0.4]), t([0.1, 0.5, -0.2, 1.0, 0.7, -0.4])
    su, sc = t([0.5, 1.0, 0.1, 0.3, 1.0, 2.0]), t([0.2, 1.5, 0.4, 0.0, 0.5, 1.0])
    n = 200_000
    true_u = gu + su * torch.randn(n, 6, generator=gen, dtype=F64)
    true_c = gc + sc * torch.randn(n, 6, generator=gen, dtype=F64)
    frequency = (true_u * true_c > 0).to(F64).mean(0)
    prob = feasible.agreement_probability(gu, gc, su, sc)
    sampling_error = (prob * (1 - prob) / n).sqrt()
    assert torch.all((frequency - prob).abs() <= 5 * sampling_error + 1e-4), (frequency, prob)


# ------------------------------------------------------------------------------------------
# Prop. 5: properties of the PROB mask.
# ------------------------------------------------------------------------------------------


@PROPERTY
@given(quads())
def test_prop5a_half_is_and_on_nonzero_estimates(q):
    gu, gc, su, sc = q
    nonzero = (gu != 0) & (gc != 0)
    prob = feasible.prob_mask(gu, gc, su, sc, 0.5)
    assert torch.equal(prob[nonzero], feasible.and_mask(gu, gc)[nonzero])
    assert bool(prob[~nonzero].all())  # a zero estimate has P = 1/2, kept at p = 1/2


@PROPERTY
@given(quads(), probabilities, probabilities)
def test_prop5b_masks_are_nested_in_p(q, p1, p2):
    gu, gc, su, sc = q
    low, high = min(p1, p2), max(p1, p2)
    loose = feasible.prob_mask(gu, gc, su, sc, low)
    strict = feasible.prob_mask(gu, gc, su, sc, high)
    assert bool((loose | ~strict).all())  # strict implies loose


@PROPERTY
@given(quads(), probabilities)
def test_prop5d_symmetry_under_sign_flip(q, p):
    gu, gc, su, sc = q
    # phi(-g) = 1 - phi(g): (phi_u, phi_c) -> (1 - phi_u, 1 - phi_c) leaves P unchanged.
    assert torch.allclose(feasible.phi(-gu, su), 1 - feasible.phi(gu, su), atol=1e-15)
    assert torch.equal(feasible.agreement_probability(-gu, -gc, su, sc),
                       feasible.agreement_probability(gu, gc, su, sc))
    assert torch.equal(feasible.prob_mask(-gu, -gc, su, sc, p),
                       feasible.prob_mask(gu, gc, su, sc, p))
    assert torch.equal(feasible.focus(-gu, -gc, su, sc), feasible.focus(gu, gc, su, sc))
    assert torch.equal(feasible.focus(-gu, -gc, su, sc, variant="signed"),
                       -feasible.focus(gu, gc, su, sc, variant="signed"))


@PROPERTY
@given(quads(), probabilities)
def test_prop5e_threshold_below_half_drops_only_evidence_of_disagreement(q, p):
    gu, gc, su, sc = q
    mask = feasible.prob_mask(gu, gc, su, sc, p)
    prob = feasible.agreement_probability(gu, gc, su, sc)
    if p < 0.5:
        # Every dropped coordinate has estimates of strictly opposite signs (P < 1/2).
        assert bool((torch.sign(gu) * torch.sign(gc) < 0)[~mask].all())
        assert bool((prob < 0.5)[~mask].all())
    else:
        # Every kept coordinate has P >= p > 1/2 or (p = 1/2) no sign conflict.
        assert bool((torch.sign(gu) * torch.sign(gc) >= 0)[mask].all())
        assert bool((prob >= p - 1e-12)[mask].all())


@pytest.mark.parametrize("p", [0.05, 0.3, 0.45, 0.5, 0.55, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prop5c_small_noise_limit_is_and_on_true_gradients(p, seed):
    gen = torch.Generator().manual_seed(seed)
    magnitude = 0.01 + torch.rand(2, 500, generator=gen, dtype=F64)
    true = magnitude * torch.sign(torch.randn(2, 500, generator=gen, dtype=F64))
    base_se = 10 * torch.rand(2, 500, generator=gen, dtype=F64)
    for scale in (1e-6, 1e-9):
        se = scale * base_se
        estimate = true + se * torch.randn(2, 500, generator=gen, dtype=F64)
        mask = feasible.prob_mask(estimate[0], estimate[1], se[0], se[1], p)
        assert torch.equal(mask, feasible.and_mask(true[0], true[1]))
        f = feasible.focus(estimate[0], estimate[1], se[0], se[1])
        limit = feasible.and_mask(true[0], true[1]).to(F64)  # Prop. 7's limit: the AND mask
        assert torch.allclose(f, limit, atol=1e-9)
        signed = feasible.focus(estimate[0], estimate[1], se[0], se[1], variant="signed")
        assert torch.allclose(signed, torch.sign(true[0]) * limit, atol=1e-9)


# ------------------------------------------------------------------------------------------
# Prop. 7: properties of the signed focus vector (this project's earlier reading).
# ------------------------------------------------------------------------------------------


@PROPERTY
@given(quads())
def test_prop7_focus_bounded_by_probability_and_signed_by_likeliest_common_sign(q):
    gu, gc, su, sc = q
    f = feasible.focus(gu, gc, su, sc, variant="signed")
    prob = feasible.agreement_probability(gu, gc, su, sc)
    assert bool((f.abs() <= prob + 1e-12).all())
    assert bool((f.abs() <= 1).all())
    phi_u, phi_c = feasible.phi(gu, su), feasible.phi(gc, sc)
    both_positive, both_negative = phi_u * phi_c, (1 - phi_u) * (1 - phi_c)
    clear = (both_positive - both_negative).abs() > 1e-12
    assert torch.equal(torch.sign(f)[clear], torch.sign(both_positive - both_negative)[clear])


@PROPERTY
@given(quads())
def test_prop7_focus_zero_iff_phi_u_is_one_minus_phi_c(q):
    gu, _, su, _ = q
    # g_c / s_c = -g_u / s_u gives phi_c = 1 - phi_u exactly: f = 0, and the update is 0.
    assert bool((feasible.focus(gu, -gu, su, su, variant="signed") == 0).all())
    update = feasible_update(gu, -gu, su, su, addon="focus", focus_variant="signed")
    assert bool((update.direction == 0).all()) and not bool(update.keep.any())
    # Elsewhere f = 0 only where phi_u + phi_c = 1 (checked with the naive phi).
    gen = torch.Generator().manual_seed(len(gu))
    gc = torch.randn(len(gu), generator=gen, dtype=F64)
    sc = torch.rand(len(gu), generator=gen, dtype=F64)
    f = feasible.focus(gu, gc, su, sc, variant="signed")
    rows = zip(gu.tolist(), gc.tolist(), su.tolist(), sc.tolist())
    naive = t([naive_signed(*row) for row in rows])
    assert bool(((f == 0) | (naive.abs() > 0)).all())
    assert bool(((f != 0) | (naive.abs() < 1e-15)).all())


# ------------------------------------------------------------------------------------------
# Prop. 6 (signed reading): the signed focus update is aligned with the common sign in
# expectation.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("agg", ["lin", "min"])
def test_prop6_expectation_identity_by_monte_carlo(agg):
    gen = torch.Generator().manual_seed(1)
    d, n = 40, 20_000
    gu = 0.5 * torch.randn(d, generator=gen, dtype=F64)
    gc = 0.5 * torch.randn(d, generator=gen, dtype=F64)
    su, sc = torch.rand(d, generator=gen, dtype=F64), torch.rand(d, generator=gen, dtype=F64)
    u = feasible.feasible_direction(gu, gc, su, sc, addon="focus", agg=agg, alpha=0.8, beta=0.5,
                                    focus_variant="signed")
    a = feasible.AGGREGATORS[agg](gu, gc, 0.8, 0.5)
    f = feasible.focus(gu, gc, su, sc, variant="signed")
    true_u = gu + su * torch.randn(n, d, generator=gen, dtype=F64)
    true_c = gc + sc * torch.randn(n, d, generator=gen, dtype=F64)
    samples = (u * (torch.sign(true_u) + torch.sign(true_c)) / 2).sum(1)
    identity = (a.abs() * f**2).sum()
    assert identity >= 0
    assert abs(samples.mean() - identity) <= 5 * samples.std() / math.sqrt(n)


# ------------------------------------------------------------------------------------------
# Def. 1 / Prop. 2: masked updates are coordinate-wise feasible for the estimates.
# ------------------------------------------------------------------------------------------


@PROPERTY
@given(quads(), st.floats(0.0, 3.0), st.floats(0.0, 3.0), st.sampled_from(["lin", "min"]),
       st.floats(0.5, 0.99))
def test_masked_update_is_coordinatewise_feasible(q, alpha, beta, agg, p):
    gu, gc, su, sc = q
    for addon in ("and", "prob"):  # PROB with p >= 1/2 keeps only sign agreements
        u = feasible.feasible_direction(gu, gc, su, sc, addon=addon, agg=agg, alpha=alpha,
                                        beta=beta, p=p)
        assert bool((u * gu >= 0).all()) and bool((u * gc >= 0).all()), addon


# ------------------------------------------------------------------------------------------
# Edge cases: se = 0, estimates = 0.
# ------------------------------------------------------------------------------------------


def test_edge_cases_zero_standard_error_and_zero_estimate():
    g, zero = t([2.0, -3.0, 0.0]), t([0.0, 0.0, 0.0])
    assert feasible.phi(g, zero).tolist() == [1.0, 0.0, 0.5]
    assert feasible.phi(zero, t([1.0, 0.0, 5.0])).tolist() == [0.5, 0.5, 0.5]
    # A zero estimate: P = 1/2, kept by PROB for p <= 1/2, dropped above and by AND; f = P = 1/2
    # (signed: f = phi - 1/2).
    gu, gc, s = t([0.0, 0.0]), t([1.0, 0.0]), t([1.0, 1.0])
    assert feasible.agreement_probability(gu, gc, s, s).tolist() == [0.5, 0.5]
    assert feasible.prob_mask(gu, gc, s, s, 0.45).tolist() == [True, True]
    assert feasible.prob_mask(gu, gc, s, s, 0.55).tolist() == [False, False]
    assert feasible.and_mask(gu, gc).tolist() == [False, False]
    assert feasible.focus(gu, gc, s, s).tolist() == [0.5, 0.5]
    assert torch.allclose(feasible.focus(gu, gc, s, s, variant="signed"),
                          t([naive_phi(1.0, 1.0) - 0.5, 0.0]))
    # Exact estimates (se = 0) of opposite signs: P = 0; of equal signs: P = 1.
    exact = feasible.agreement_probability(t([1.0, 1.0]), t([-1.0, 2.0]), zero[:2], zero[:2])
    assert exact.tolist() == [0.0, 1.0]


def test_tiny_gradients_do_not_underflow_the_and_mask():
    gu, gc = t([1e-200, -1e-200, 1e-200], torch.float64), t([1e-200, 1e-200, 0.0])
    assert feasible.and_mask(gu, gc).tolist() == [True, False, False]
    s = t([1.0, 1.0, 1.0])
    assert feasible.prob_mask(gu, gc, s, s, 0.5).tolist() == [True, False, True]
    assert feasible.prob_mask(gu, gc, s, s, 0.500001).tolist() == [False, False, False]


# ------------------------------------------------------------------------------------------
# Structures, dtypes, shapes, devices, inputs untouched.
# ------------------------------------------------------------------------------------------


def _all_functions(gu, gc, su, sc):
    return {
        "lin_g": feasible.lin_g(gu, gc, 0.8, 0.5),
        "min_g": feasible.min_g(gu, gc),
        "and_mask": feasible.and_mask(gu, gc),
        "phi": feasible.phi(gu, su),
        "agreement_probability": feasible.agreement_probability(gu, gc, su, sc),
        "prob_mask": feasible.prob_mask(gu, gc, su, sc),
        "focus": feasible.focus(gu, gc, su, sc),
        "soft": feasible.focus(gu, gc, su, sc, variant="soft"),
        "signed": feasible.focus(gu, gc, su, sc, variant="signed"),
        "certified": feasible.certified_mask(gu, gc, alpha=0.8, beta=0.5),
        "certified_focus": feasible.certified_mask(
            gu, gc, weight=feasible.agreement_probability(gu, gc, su, sc)),
        "saliency_per_tensor": feasible.saliency_mask(gu, per_tensor=True),
        "saliency_mask": feasible.saliency_mask(gu),
        "direction": feasible.feasible_direction(gu, gc, su, sc),
        "focus_update": feasible_update(gu, gc, su, sc, addon="focus", renorm=True).direction,
        "focus_opt": feasible_update(gu, gc, su, sc, addon="focus_opt").direction,
        "opt": feasible_update(gu, gc, addon="opt", agg="min").direction,
    }


def _random_tree(kind, gen, dtype=F64, shapes=((3, 4), (5,), ())):
    tensors = [torch.randn(shape, generator=gen, dtype=dtype) for shape in shapes]
    if kind == "dict":
        return {f"layer{i}.weight": x for i, x in enumerate(tensors)}
    if kind == "tuple":
        return tuple(tensors)
    return list(tensors)


@pytest.mark.parametrize("kind", ["list", "tuple", "dict"])
def test_structures_round_trip_and_match_leafwise_results(kind):
    gen = torch.Generator().manual_seed(3)
    gu, gc = _random_tree(kind, gen), _random_tree(kind, gen)
    su = type(gu)(x.abs() for x in _random_tree("list", gen)) if kind != "dict" else {
        k: v.abs() for k, v in _random_tree("dict", gen).items()}
    sc = type(gu)(x.abs() for x in _random_tree("list", gen)) if kind != "dict" else {
        k: v.abs() for k, v in _random_tree("dict", gen).items()}
    results = _all_functions(gu, gc, su, sc)
    keys = list(gu) if kind == "dict" else range(len(gu))
    for name, out in results.items():
        assert type(out) is type(gu), name
        if kind == "dict":
            assert list(out) == list(gu), name
        for key in keys:
            assert out[key].shape == gu[key].shape, name
    # Per-leaf results equal the single-tensor results (saliency and renorm are global, so skip).
    for key in keys:
        single = _all_functions(gu[key], gc[key], su[key], sc[key])
        for name in ("lin_g", "min_g", "and_mask", "phi", "agreement_probability", "prob_mask",
                     "focus", "soft", "signed", "direction", "certified", "certified_focus",
                     "saliency_per_tensor", "focus_opt", "opt"):
            assert torch.equal(results[name][key], single[name]), name


def test_dicts_are_matched_by_key_not_order():
    gu = {"a": t([1.0, -1.0]), "b": t([2.0])}
    gc = {"b": t([-3.0]), "a": t([1.0, 1.0])}
    mask = feasible.and_mask(gu, gc)
    assert list(mask) == ["a", "b"]
    assert mask["a"].tolist() == [True, False] and mask["b"].tolist() == [False]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(), (0,), (4,), (2, 3, 4)])
def test_dtypes_and_shapes_are_kept(dtype, shape):
    gen = torch.Generator().manual_seed(5)
    gu, gc = (torch.randn(shape, generator=gen, dtype=dtype) for _ in range(2))
    su, sc = (torch.rand(shape, generator=gen, dtype=dtype) for _ in range(2))
    for name, out in _all_functions(gu, gc, su, sc).items():
        assert out.shape == gu.shape, name
        masks = ("and_mask", "prob_mask", "saliency_mask", "certified", "certified_focus",
                 "saliency_per_tensor")
        expected = torch.bool if name in masks else dtype
        assert out.dtype == expected, name


def test_half_precision_runs():
    gu, gc = t([0.5, -1.0, 2.0], torch.float16), t([0.25, 1.0, 1.0], torch.float16)
    s = t([1.0, 1.0, 1.0], torch.float16)
    out = feasible_update(gu, gc, s, s, addon="focus")
    assert out.direction.dtype == torch.float16 and torch.isfinite(out.direction).all()
    assert feasible.prob_mask(gu, gc, s, s, 0.5).tolist() == [True, False, True]


def test_inputs_are_not_modified():
    gen = torch.Generator().manual_seed(7)
    trees = [_random_tree("dict", gen) for _ in range(4)]
    trees[2] = {k: v.abs() for k, v in trees[2].items()}
    trees[3] = {k: v.abs() for k, v in trees[3].items()}
    copies = [{k: v.clone() for k, v in tree.items()} for tree in trees]
    _all_functions(*trees)
    for addon in feasible.ADDONS:
        feasible_update(*trees, addon=addon, saliency=feasible.saliency_mask(trees[0]), renorm=True)
    for tree, copy in zip(trees, copies):
        assert all(torch.equal(tree[k], copy[k]) for k in tree)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_outputs_stay_on_the_input_device():
    gen = torch.Generator().manual_seed(0)
    trees = [{k: v.cuda() for k, v in _random_tree("dict", gen).items()} for _ in range(4)]
    trees[2] = {k: v.abs() for k, v in trees[2].items()}
    trees[3] = {k: v.abs() for k, v in trees[3].items()}
    for name, out in _all_functions(*trees).items():
        assert all(v.is_cuda for v in out.values()), name
    cpu = [{k: v.cpu() for k, v in tree.items()} for tree in trees]
    for key in trees[0]:
        on_gpu, on_cpu = _all_functions(*trees)["focus"][key], _all_functions(*cpu)["focus"][key]
        assert torch.allclose(on_gpu.cpu(), on_cpu)


# ------------------------------------------------------------------------------------------
# saliency_mask: the global top fraction.
# ------------------------------------------------------------------------------------------


@PROPERTY
@given(st.integers(0, 10_000), st.floats(0.01, 1.0))
def test_saliency_keeps_exactly_the_global_top_fraction(seed, fraction):
    gen = torch.Generator().manual_seed(seed)
    grads = {"w": torch.randn(7, 3, generator=gen), "b": 3 * torch.randn(5, generator=gen),
             "c": torch.randn(2, 2, 2, generator=gen, dtype=F64)}
    mask = feasible.saliency_mask(grads, fraction)
    kept = torch.cat([mask[k].reshape(-1) for k in grads])
    scores = torch.cat([grads[k].abs().reshape(-1).to(F64) for k in grads])
    assert int(kept.sum()) == round(fraction * 34)
    if 0 < kept.sum() < 34:
        assert scores[kept].min() >= scores[~kept].max()


def test_saliency_ties_are_broken_by_position_and_fraction_one_keeps_all():
    grads = [torch.ones(3), -torch.ones(2, 2)]
    mask = feasible.saliency_mask(grads, 0.5)  # round(3.5) = 4: the first four in flat order
    assert mask[0].tolist() == [True, True, True]
    assert mask[1].tolist() == [[True, False], [False, False]]
    again = feasible.saliency_mask(grads, 0.5)
    assert all(torch.equal(x, y) for x, y in zip(mask, again))
    full = feasible.saliency_mask(grads, 1.0)
    assert all(bool(m.all()) for m in full)
    single = feasible.saliency_mask(t([0.1, -5.0, 3.0, 0.0]), 0.5)
    assert single.tolist() == [False, True, True, False]


# ------------------------------------------------------------------------------------------
# feasible_update / feasible_direction: dispatch, keep, renorm.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("addon", list(feasible.ADDONS))
@pytest.mark.parametrize("agg", list(feasible.AGGREGATORS))
@pytest.mark.parametrize("variant", list(FOCUS_VARIANTS))
def test_update_follows_its_definition(addon, agg, variant):
    gen = torch.Generator().manual_seed(11)
    gu, gc = torch.randn(50, generator=gen, dtype=F64), torch.randn(50, generator=gen, dtype=F64)
    su, sc = torch.rand(50, generator=gen, dtype=F64), torch.rand(50, generator=gen, dtype=F64)
    sal = feasible.saliency_mask(gu, 0.3)
    kwargs = dict(addon=addon, agg=agg, alpha=0.8, beta=0.5, p=0.45, saliency=sal,
                  focus_variant=variant)
    update = feasible_update(gu, gc, su, sc, **kwargs)
    assert torch.equal(feasible.feasible_direction(gu, gc, su, sc, **kwargs), update.direction)
    a = feasible.AGGREGATORS[agg](gu, gc, 0.8, 0.5)
    factor = feasible.focus(gu, gc, su, sc, variant=variant, p=0.45)
    prob = feasible.prob_mask(gu, gc, su, sc, 0.45)
    f = feasible.agreement_probability(gu, gc, su, sc)
    opt = feasible.certified_mask(gu, gc, alpha=0.8, beta=0.5, agg=agg)
    focus_opt = feasible.certified_mask(gu, gc, alpha=0.8, beta=0.5, agg=agg, weight=f) & (f > 0)
    expected = {
        "none": (a, torch.ones(50, dtype=torch.bool)),
        "salun": (a * sal, sal),
        "salun_step": (a * sal, sal),
        "and": (a * feasible.and_mask(gu, gc), feasible.and_mask(gu, gc)),
        "prob": (a * prob, prob),
        "focus": (factor * (a.abs() if variant == "signed" else a), factor != 0),
        "opt": (a * opt, opt),
        "focus_opt": (f * a * focus_opt, focus_opt),
    }[addon]
    if addon in ("and", "prob"):
        assert 0 < int(expected[1].sum()) < 50, addon  # the example masks something
    assert torch.allclose(update.direction, expected[0], atol=1e-15)
    assert torch.equal(update.keep, expected[1])
    assert bool((update.direction[~update.keep] == 0).all())


def test_renorm_restores_the_unmasked_norm_and_keeps_zero():
    gen = torch.Generator().manual_seed(2)
    gu, gc = _random_tree("dict", gen), _random_tree("dict", gen)
    su = {k: v.abs() for k, v in _random_tree("dict", gen).items()}
    sc = {k: v.abs() for k, v in _random_tree("dict", gen).items()}
    norm = lambda tree: torch.sqrt(sum((v**2).sum() for v in tree.values()))  # noqa: E731
    a = feasible.lin_g(gu, gc, 0.8, 0.5)
    for addon in ("and", "prob", "focus", "opt", "focus_opt"):
        plain = feasible_update(gu, gc, su, sc, addon=addon, alpha=0.8, beta=0.5)
        scaled = feasible_update(gu, gc, su, sc, addon=addon, alpha=0.8, beta=0.5, renorm=True)
        assert torch.allclose(norm(scaled.direction), norm(a))
        ratio = norm(a) / norm(plain.direction)
        assert all(torch.allclose(scaled.direction[k], ratio * plain.direction[k]) for k in gu)
        assert all(torch.equal(scaled.keep[k], plain.keep[k]) for k in gu)
    # Opposite gradients: the AND direction is 0 and stays 0 under renorm.
    opposite = {k: -v for k, v in gu.items()}
    zero = feasible_update(gu, opposite, addon="and", renorm=True).direction
    assert all(bool((v == 0).all()) and torch.isfinite(v).all() for v in zero.values())


# ------------------------------------------------------------------------------------------
# Validation: every ValueError and TypeError of the contract.
# ------------------------------------------------------------------------------------------

X = t([1.0, -1.0])
S = t([0.5, 0.5])


@pytest.mark.parametrize("p", [0.0, 1.0, 1.5, -0.1, float("nan"), True, "0.4"])
def test_bad_p_is_rejected(p):
    pattern = r"The 'p' parameter of prob_mask must be a float in the open interval \(0, 1\)"
    with pytest.raises(ValueError, match=pattern):
        feasible.prob_mask(X, X, S, S, p)
    with pytest.raises(ValueError, match="'p' parameter of focus"):
        feasible.focus(X, X, S, S, variant="soft", p=p)
    with pytest.raises(ValueError, match="'p' parameter of feasible_direction"):
        feasible.feasible_direction(X, X, S, S, p=p)


def test_p_error_message_names_the_value():
    with pytest.raises(ValueError, match=r"Got 1\.5 instead\."):
        feasible.prob_mask(X, X, S, S, 1.5)


@pytest.mark.parametrize("name", ["alpha", "beta"])
@pytest.mark.parametrize("value", [-0.5, float("inf"), float("nan")])
def test_bad_weights_are_rejected(name, value):
    for fn in (feasible.lin_g, feasible.min_g):
        with pytest.raises(ValueError, match=(
            f"The '{name}' parameter of {fn.__name__} "
            f"must be a finite float >= 0"
        )):
            fn(X, X, **{name: value})
    with pytest.raises(ValueError, match=f"'{name}' parameter of feasible_update"):
        feasible_update(X, X, S, S, **{name: value})


def test_mismatched_shapes_name_both_tensors_and_shapes():
    with pytest.raises(ValueError, match=r"g_u with shape \(2,\) and g_c with shape \(3,\)"):
        feasible.lin_g(X, t([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=(
        r"g_u\['w'\] with shape \(2,\) and "
        r"se_u\['w'\] with shape \(2, 1\)"
    )):
        feasible.prob_mask({"w": X}, {"w": X}, {"w": S.reshape(2, 1)}, {"w": S})
    with pytest.raises(ValueError, match=r"g\[1\] with shape \(2,\) and se\[1\] with shape \(1,\)"):
        feasible.phi([X, X], [S, S[:1]])


def test_mismatched_structures_are_rejected():
    with pytest.raises(ValueError, match=(
        "same structure. Got a dict with keys "
        "\\['w'\\] and a list of length 1"
    )):
        feasible.and_mask({"w": X}, [X])
    with pytest.raises(ValueError, match="same structure"):
        feasible.and_mask({"w": X}, {"v": X})
    with pytest.raises(ValueError, match="a list of length 2 and a list of length 1"):
        feasible.lin_g([X, X], [X])
    with pytest.raises(ValueError, match="same structure. Got a tensor and a list"):
        feasible.lin_g(X, [X])
    with pytest.raises(ValueError, match="'g_u' and 'saliency' arguments of feasible_update"):
        feasible_update([X], [X], addon="salun", saliency={"w": X > 0})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_name_the_argument_and_key(bad):
    broken = {"fc.weight": t([0.0, bad]), "fc.bias": X}
    good = {"fc.weight": X, "fc.bias": X}
    se = {"fc.weight": S, "fc.bias": S}
    with pytest.raises(ValueError, match=(
        r"The 'g_c' argument of lin_g must be finite. Got "
        r"NaN or inf in g_c\['fc.weight'\]"
    )):
        feasible.lin_g(good, broken)
    with pytest.raises(ValueError, match=r"'se_u' argument of prob_mask must be finite"):
        feasible.prob_mask(good, good, broken, se)
    with pytest.raises(ValueError, match=r"'g_u' argument of feasible_direction must be finite"):
        feasible.feasible_direction(broken, good, se, se)
    with pytest.raises(ValueError, match=r"'grads' argument of saliency_mask must be finite"):
        feasible.saliency_mask(broken)
    with pytest.raises(ValueError, match=(
        r"'g' argument of phi must be finite. Got "
        r"NaN or inf in g\[1\]"
    )):
        feasible.phi([X, t([bad])], [S, t([1.0])])


def test_negative_standard_error_is_rejected():
    with pytest.raises(ValueError, match=(
        r"'se' argument of phi must be >= 0 \(a standard "
        r"error\). Got -0.5 in se instead"
    )):
        feasible.phi(X, t([1.0, -0.5]))
    with pytest.raises(ValueError, match=r"'se_c' argument of agreement_probability must be >= 0"):
        feasible.agreement_probability(X, X, S, -S)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match=(
        "Unknown add-on 'porb'; expected one of 'none', 'salun', 'salun_step', 'and', 'prob', "
        "'focus', 'opt', 'focus_opt'."
    )):
        feasible.feasible_direction(X, X, S, S, addon="porb")
    with pytest.raises(ValueError, match="Unknown aggregator 'max'; expected one of 'lin', 'min'."):
        feasible.feasible_direction(X, X, S, S, agg="max")
    with pytest.raises(ValueError, match=(
        "Unknown focus variant 'hard'; expected "
        "one of 'probability', 'signed', 'soft'."
    )):
        feasible.feasible_direction(X, X, S, S, addon="focus", focus_variant="hard")
    with pytest.raises(ValueError, match="Unknown focus variant 'hard'"):
        feasible.focus(X, X, S, S, variant="hard")


@pytest.mark.parametrize("addon", [a for a, record in feasible.ADDONS.items() if record.needs_se])
def test_missing_standard_errors_are_rejected(addon):
    with pytest.raises(ValueError, match=(
        f"The 'se_u' parameter of feasible_direction is "
        f"required for add-on '{addon}'"
    )):
        feasible.feasible_direction(X, X, addon=addon)
    with pytest.raises(ValueError, match=(
        f"The 'se_c' parameter of feasible_update is "
        f"required for add-on '{addon}'"
    )):
        feasible_update(X, X, S, addon=addon)
    # Add-ons that need no standard errors run without them.
    assert torch.equal(feasible.feasible_direction(X, X, addon="and"), X * 2)


def test_missing_saliency_is_rejected():
    with pytest.raises(ValueError, match=(
        "The 'saliency' parameter of feasible_direction "
        "is required for add-on 'salun'"
    )):
        feasible.feasible_direction(X, X, addon="salun")
    with pytest.raises(ValueError, match=(
        r"The 'saliency' parameter of feasible_update is required for add-on 'salun_step' "
        r"\(a bool mask recomputed at every step, e.g. saliency_mask\(gradient of -CE on the "
        r"forget batch, fraction, per_tensor=True\)\)"
    )):
        feasible_update(X, X, addon="salun_step")


def test_non_tensor_leaves_are_type_errors():
    with pytest.raises(TypeError, match=(
        r"'g_c' argument of lin_g must hold torch.Tensor "
        r"leaves; g_c\[1\] is a float"
    )):
        feasible.lin_g([X, X], [X, 1.0])
    with pytest.raises(TypeError, match=(
        "'g_u' argument of and_mask must be a torch.Tensor or "
        "a list or dict of tensors. Got float"
    )):
        feasible.and_mask(1.0, X)
    with pytest.raises(TypeError, match="floating-point tensors; g_u has dtype torch.int64"):
        feasible.and_mask(torch.tensor([1, 2]), X)
    with pytest.raises(TypeError, match="'renorm' parameter of feasible_update must be a bool"):
        feasible_update(X, X, S, S, renorm="yes")
    with pytest.raises(TypeError):
        feasible.saliency_mask({"w": [1.0, 2.0]})


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), True])
def test_bad_saliency_fraction_is_rejected(fraction):
    with pytest.raises(ValueError, match=(
        r"The 'fraction' parameter of saliency_mask must be "
        r"a float in the interval \(0, 1\]"
    )):
        feasible.saliency_mask(X, fraction)


# ------------------------------------------------------------------------------------------
# The authors' focus vector f = P (Prop. 7 as coded) and its limits.
# ------------------------------------------------------------------------------------------


@PROPERTY
@given(quads())
def test_focus_is_the_agreement_probability_and_never_flips_the_aggregate(q):
    gu, gc, su, sc = q
    f = feasible.focus(gu, gc, su, sc)
    assert torch.equal(f, feasible.agreement_probability(gu, gc, su, sc))
    assert bool(((f >= 0) & (f <= 1)).all())
    # f = (1 + psi_U psi_C) / 2 with psi = 2 phi - 1.
    psi_u, psi_c = 2 * feasible.phi(gu, su) - 1, 2 * feasible.phi(gc, sc) - 1
    assert torch.allclose(f, (1 + psi_u * psi_c) / 2, atol=1e-12)
    a = feasible.lin_g(gu, gc, 0.8, 0.5)
    update = feasible_update(gu, gc, su, sc, addon="focus", alpha=0.8, beta=0.5)
    assert torch.equal(update.direction, f * a)
    assert bool((update.direction * a >= 0).all())  # attenuates, never flips
    assert torch.equal(update.keep, f > 0)
    # PROB is f thresholded, away from the threshold where rounding may decide.
    for p in (0.3, 0.45, 0.55):
        clear = (f - p).abs() > 1e-9
        assert torch.equal(feasible.prob_mask(gu, gc, su, sc, p)[clear], (f >= p)[clear])


@PROPERTY
@given(quads())
def test_focus_is_one_half_where_a_loss_carries_no_signal(q):
    gu, gc, su, sc = q
    zero = torch.zeros_like(gu)
    assert bool((feasible.focus(zero, gc, su, sc) == 0.5).all())  # no estimate of g_U
    assert bool((feasible.focus(gu, zero, su, sc) == 0.5).all())  # no estimate of g_C
    infinite = torch.full_like(su, 1e300)  # a standard error that swamps any estimate
    assert torch.allclose(feasible.focus(gu, gc, infinite, sc), t([0.5] * len(gu)), atol=1e-12)
    assert torch.allclose(feasible.focus(gu, gc, su, infinite), t([0.5] * len(gu)), atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_focus_tends_to_the_and_mask_as_noise_vanishes_and_to_one_half_as_it_grows(seed):
    gen = torch.Generator().manual_seed(seed)
    gu, gc = torch.randn(2, 400, generator=gen, dtype=F64)
    gu, gc = gu.sign() * (0.01 + gu.abs()), gc.sign() * (0.01 + gc.abs())  # no zero estimate
    base_u, base_c = torch.rand(2, 400, generator=gen, dtype=F64) + 0.1
    and_indicator = feasible.and_mask(gu, gc).to(F64)
    # Exact estimates: f is the AND indicator exactly.
    zero = torch.zeros_like(gu)
    assert torch.equal(feasible.focus(gu, gc, zero, zero), and_indicator)
    distances = []
    for scale in (1e-1, 1e-2, 1e-3, 1e-6):
        f = feasible.focus(gu, gc, scale * base_u, scale * base_c)
        distances.append(float((f - and_indicator).abs().max()))
    assert distances == sorted(distances, reverse=True) and distances[-1] < 1e-12
    halves = []
    for scale in (1e1, 1e2, 1e4, 1e8):
        f = feasible.focus(gu, gc, scale * base_u, scale * base_c)
        halves.append(float((f - 0.5).abs().max()))
    assert halves == sorted(halves, reverse=True) and halves[-1] < 1e-12
    # One loss noisy is enough: f -> 1/2 as either standard error grows.
    f = feasible.focus(gu, gc, 1e8 * base_u, zero)
    assert float((f - 0.5).abs().max()) < 1e-7


# ------------------------------------------------------------------------------------------
# certified_mask: the OPT certificate.
# ------------------------------------------------------------------------------------------


def _inner(u, g):
    return float(torch.dot(u.reshape(-1).double(), g.reshape(-1).double()))


def _scale(u, g):
    """The size of the terms of <u, g>: the tolerance of a float64 sum is relative to it."""
    return float((u.reshape(-1).double() * g.reshape(-1).double()).abs().sum())


def _check_certificate(gu, gc, mask, direction, tol=1e-9):
    """Both inner products >= 0 (up to rounding) on the kept direction of one tensor."""
    u = mask * direction
    for g in (gu, gc):
        assert _inner(u, g) >= -tol * max(_scale(direction, g), 1e-300)


def _order(gu, gc, weight=None):
    key = gu.reshape(-1).double() * gc.reshape(-1).double()
    if weight is not None:
        key = weight.reshape(-1).double() * key
    return torch.sort(key, stable=True).indices


_gradient_entries = st.one_of(
    st.just(0.0),
    st.floats(-10.0, 10.0, allow_nan=False),
    st.floats(-1e-6, 1e-6, allow_nan=False),
)


@st.composite
def gradient_pairs(draw, max_size=40):
    n = draw(st.integers(1, max_size))
    vec = lambda: t(draw(st.lists(_gradient_entries, min_size=n, max_size=n)))  # noqa: E731
    return vec(), vec()


@PROPERTY
@given(gradient_pairs(), st.floats(0.0, 2.0), st.floats(0.0, 2.0), st.sampled_from(["lin", "min"]),
       st.booleans())
def test_certified_mask_makes_a_descent_direction_for_both_and_is_minimal(pair, alpha, beta, agg,
                                                                         weighted):
    gu, gc = pair
    gen = torch.Generator().manual_seed(len(gu))
    weight = torch.rand(len(gu), generator=gen, dtype=F64) if weighted else None
    mask = feasible.certified_mask(gu, gc, alpha=alpha, beta=beta, agg=agg, weight=weight)
    assert mask.dtype == torch.bool and mask.shape == gu.shape
    direction = feasible.AGGREGATORS[agg](gu, gc, alpha, beta)
    if weighted:
        direction = weight * direction
    _check_certificate(gu, gc, mask, direction)
    # The removed coordinates are a prefix of the order of w * g_u * g_c (most negative first).
    order = _order(gu, gc, weight)
    cut = int((~mask).sum())
    assert bool((~mask[order[:cut]]).all()) and bool(mask[order[cut:]].all())
    if cut:
        # Minimal in that order: keeping the last removed coordinate breaks the certificate.
        relaxed = mask.clone()
        relaxed[order[cut - 1]] = True
        u = relaxed * direction
        worst = min(_inner(u, gu), _inner(u, gc))
        tol = 1e-9 * max(_scale(direction, gu), _scale(direction, gc))
        assert worst < tol
        # Only conflicting coordinates are ever cut (for these aggregators and weights >= 0).
        assert bool((gu[~mask] * gc[~mask] < 0).all())


@PROPERTY
@given(gradient_pairs(), st.floats(0.01, 2.0), st.floats(0.01, 2.0),
       st.sampled_from(["lin", "min"]))
def test_certified_mask_cuts_nothing_when_the_aggregate_already_descends_both(pair, alpha, beta,
                                                                             agg):
    gu, gc = pair
    a = feasible.AGGREGATORS[agg](gu, gc, alpha, beta)
    mask = feasible.certified_mask(gu, gc, alpha=alpha, beta=beta, agg=agg)
    tol = 1e-9 * max(_scale(a, gu), _scale(a, gc))
    if _inner(a, gu) > tol and _inner(a, gc) > tol:
        assert bool(mask.all())
    # And for agreeing gradients (every product >= 0) nothing is ever cut.
    same = feasible.certified_mask(gu.abs(), gc.abs(), alpha=alpha, beta=beta, agg=agg)
    assert bool(same.all())


def _authors_rule(gu, gc, alpha, beta):
    """A naive reference of the authors' OPT test, one prefix at a time, in exact fractions.

    Cut coordinates in the order of g_u * g_c until
    min(alpha/beta sum g_u^2, beta/alpha sum g_c^2) + sum g_u g_c >= 0 over the kept ones;
    when no prefix passes, cut everything.
    """
    from fractions import Fraction

    u = [Fraction(x) for x in gu.tolist()]
    c = [Fraction(x) for x in gc.tolist()]
    a, b = Fraction(alpha), Fraction(beta)
    order = _order(gu, gc).tolist()
    for cut in range(len(u) + 1):
        kept = order[cut:]
        value = min(a / b * sum(u[i] ** 2 for i in kept), b / a * sum(c[i] ** 2 for i in kept))
        if value + sum(u[i] * c[i] for i in kept) >= 0:
            break
    mask = torch.ones(len(u), dtype=torch.bool)
    mask[order[:cut]] = False
    return mask


@PROPERTY
@given(gradient_pairs(max_size=15), st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_certified_mask_equals_the_authors_test_for_lin_g(pair, alpha, beta):
    gu, gc = pair
    # float64 cannot compare with the exact rule where a product of two nonzero components
    # underflows to 0 (e.g. 5e-51 * -2e-279): there the float sums see 0, the exact ones do not
    assume(all((x * y != 0) == (x != 0 and y != 0) and (x == 0 or x * x != 0)
               and (y == 0 or y * y != 0) for x, y in zip(gu.tolist(), gc.tolist())))
    ours = feasible.certified_mask(gu, gc, alpha=alpha, beta=beta)
    reference = _authors_rule(gu, gc, alpha, beta)
    if not torch.equal(ours, reference):
        # They may differ only where the float64 sums round across 0 at the cut-off.
        direction = feasible.lin_g(gu, gc, alpha, beta)
        scale = max(_scale(direction, gu), _scale(direction, gc))
        for mask in (ours, reference):
            u = mask * direction
            assert min(_inner(u, gu), _inner(u, gc)) >= -1e-9 * scale
        assert abs(int(ours.sum()) - int(reference.sum())) <= 1


def test_certified_mask_hand_worked_and_the_zero_direction_when_no_cut_off_exists():
    # g_u * g_c = [-4, -1, 6]; alpha = beta = 1: a = [-1, 0, 5].
    gu, gc = t([2.0, 1.0, 2.0]), t([-3.0, -1.0, 3.0])
    # All kept: <a, g_u> = -2 + 0 + 10 = 8 >= 0, <a, g_c> = 3 + 0 + 15 = 18 >= 0: nothing cut.
    assert feasible.certified_mask(gu, gc).tolist() == [True, True, True]
    # alpha = 1, beta = 4: a = [-10, -3, 14]; <a, g_u> = -20 - 3 + 28 = 5, <a, g_c> = 30 + 3
    # + 42 = 75: nothing cut. With g_u[2] = 0.5 instead: a = [-10, -3, 12.5], <a, g_u> = -20 - 3
    # + 6.25 < 0; cut coordinate 0 (product -6 < -1 < 1.5): <a, g_u> = -3 + 6.25 >= 0 and
    # <a, g_c> = 3 + 37.5 >= 0.
    assert feasible.certified_mask(gu, gc, alpha=1.0, beta=4.0).tolist() == [True, True, True]
    gu2 = t([2.0, 1.0, 0.5])
    assert feasible.certified_mask(gu2, gc, alpha=1.0, beta=4.0).tolist() == [False, True, True]
    # Gradients that conflict on every coordinate: no non-empty subset descends both, so the
    # whole tensor is cut and its direction is zero, while another tensor is left alone.
    conflict = {"w": t([1.0, 2.0, 3.0]), "b": t([1.0, 1.0])}
    other = {"w": t([-1.0, -2.0, -3.0]), "b": t([2.0, 0.5])}
    mask = feasible.certified_mask(conflict, other, alpha=1.0, beta=2.0)
    assert mask["w"].tolist() == [False, False, False] and mask["b"].tolist() == [True, True]
    update = feasible_update(conflict, other, addon="opt", alpha=1.0, beta=2.0)
    assert bool((update.direction["w"] == 0).all()) and not bool(update.keep["w"].any())
    expected_b = feasible.lin_g(t([1.0, 1.0]), t([2.0, 0.5]), 1.0, 2.0)
    assert torch.equal(update.direction["b"], expected_b)
    # An empty tensor stays empty.
    assert feasible.certified_mask(t([]), t([])).shape == (0,)


def test_certified_mask_is_per_tensor():
    gen = torch.Generator().manual_seed(4)
    gu, gc = _random_tree("dict", gen), _random_tree("dict", gen)
    gc = {k: -v + 0.3 * torch.randn(v.shape, generator=gen, dtype=F64) for k, v in gu.items()}
    together = feasible.certified_mask(gu, gc, alpha=0.05, beta=0.95)
    for key in gu:
        assert torch.equal(together[key],
                           feasible.certified_mask(gu[key], gc[key], alpha=0.05, beta=0.95))


def _digits_gradients(seed=0, hidden=16):
    """The NGPlus gradients of a small MLP on scikit-learn's digits: -CE on a forget batch and
    CE on a retain batch, after a few steps of training (a real network's gradients)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[200:]), y[200:]).backward()
        opt.step()
    params = dict(net.named_parameters())

    def grads(loss):
        values = torch.autograd.grad(loss, list(params.values()))
        return {n: g.detach() for n, g in zip(params, values)}

    gen = torch.Generator().manual_seed(seed)
    forget = torch.randperm(200, generator=gen)[:64]
    retain = 200 + torch.randperm(len(y) - 200, generator=gen)[:64]
    g_u = grads(-torch.nn.functional.cross_entropy(net(x[forget]), y[forget]))
    g_c = grads(torch.nn.functional.cross_entropy(net(x[retain]), y[retain]))
    return g_u, g_c


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_certificate_on_real_network_gradients(seed):
    g_u, g_c = _digits_gradients(seed)
    se_u, _ = feasible.ema_scale(g_u)  # the authors' first-step scale: f close to AND
    se_c, _ = feasible.ema_scale(g_c)
    f = feasible.focus(g_u, g_c, se_u, se_c)
    alpha, beta = 0.05, 0.95
    any_cut = False
    for addon, weight in (("opt", None), ("focus_opt", f)):
        update = feasible_update(g_u, g_c, se_u, se_c, addon=addon, alpha=alpha, beta=beta)
        mask = feasible.certified_mask(g_u, g_c, alpha=alpha, beta=beta, weight=weight)
        for name in g_u:
            direction = feasible.lin_g(g_u[name], g_c[name], alpha, beta)
            if weight is not None:
                direction = weight[name] * direction
            _check_certificate(g_u[name], g_c[name], mask[name], direction, tol=1e-6)
            u = update.direction[name]
            for g in (g_u[name], g_c[name]):
                assert _inner(u, g) >= -1e-6 * max(_scale(direction, g), 1e-30)
            any_cut = any_cut or not bool(mask[name].all())
    # The aggregate alone fails the certificate on some tensor of a real network: the cut acts.
    assert any_cut


# ------------------------------------------------------------------------------------------
# saliency_mask(per_tensor=True): the authors' per-step SalUn threshold.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.75, 0.125, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_per_tensor_saliency_is_torch_quantile_midpoint(dtype, fraction, seed):
    gen = torch.Generator().manual_seed(seed)
    grads = {"w": torch.randn(7, 5, generator=gen, dtype=dtype),
             "b": torch.randn(6, generator=gen, dtype=dtype),
             "s": torch.randn((), generator=gen, dtype=dtype),
             "ties": torch.tensor([0.0, 0.0, 0.0, 1.0, -1.0, 2.0, 0.0], dtype=dtype)}
    grads["w"][0] = 0.0  # dead units: ties at 0
    mask = feasible.saliency_mask(grads, fraction, per_tensor=True)
    for name, g in grads.items():
        threshold = torch.quantile(g.abs().reshape(-1), 1 - fraction, interpolation="midpoint")
        assert torch.equal(mask[name], g.abs() >= threshold), name


def test_per_tensor_saliency_keeps_ties_and_ranks_exactly():
    # More than half zero: the median is 0 and every coordinate is kept (|g| >= 0).
    dead = t([0.0, 0.0, 0.0, 0.5, -2.0])
    assert feasible.saliency_mask(dead, 0.5, per_tensor=True).tolist() == [True] * 5
    # 11 values, fraction 0.7: the 0.3-quantile has rank 0.3 * 10 = 3 exactly (the order
    # statistic |g|_(3) = 3), although 1 - 0.7 is 0.30000000000000004 in floating point.
    g = t([5.0, -1.0, 0.0, 3.0, 2.0, 10.0, -4.0, 6.0, 7.0, 8.0, 9.0])
    kept = feasible.saliency_mask(g, 0.7, per_tensor=True)
    assert kept.tolist() == [abs(v) >= 3.0 for v in g.tolist()] and int(kept.sum()) == 8
    # Midpoint between order statistics: 4 values, fraction 0.5 -> (|g|_(1) + |g|_(2)) / 2 = 2.5.
    assert feasible.saliency_mask(t([1.0, 2.0, 3.0, 4.0]), 0.5, per_tensor=True).tolist() == [
        False, False, True, True]
    # Each tensor on its own: a tensor of small gradients keeps its own top half.
    tree = [t([100.0, 200.0]), t([0.001, 0.002])]
    assert [m.tolist() for m in feasible.saliency_mask(tree, 0.5, per_tensor=True)] == [
        [False, True], [False, True]]
    assert [m.tolist() for m in feasible.saliency_mask(tree, 0.5)] == [[True, True],
                                                                      [False, False]]


def test_per_tensor_must_be_a_bool():
    with pytest.raises(TypeError, match="'per_tensor' parameter of saliency_mask must be a bool"):
        feasible.saliency_mask(X, 0.5, per_tensor=1)


# ------------------------------------------------------------------------------------------
# The add-on registry: one record per add-on, read by masks, the loop and the CLI.
# ------------------------------------------------------------------------------------------


def test_addon_registry_records():
    import dataclasses

    from feasible.methods import ADDON_USES
    from feasible.unlearn import UnlearnConfig

    assert list(feasible.ADDONS) == ["none", "salun", "salun_step", "and", "prob", "focus",
                                     "opt", "focus_opt"]
    fields = {f.name for f in dataclasses.fields(UnlearnConfig)}
    for name, record in feasible.ADDONS.items():
        assert isinstance(record, feasible.Addon) and record.name == name and record.description
        assert set(record.uses) <= fields
        assert record.needs_se == ({"se_u", "se_c"} <= set(record.requires))
        assert ADDON_USES[name] == record.uses
    assert feasible.ADDONS["salun"].saliency == "theta0"
    assert feasible.ADDONS["salun_step"].saliency == "step"
    assert not feasible.ADDONS["opt"].needs_se and feasible.ADDONS["opt"].needs_both
    assert feasible.ADDONS["focus_opt"].needs_se
    with pytest.raises(dataclasses.FrozenInstanceError):
        feasible.ADDONS["opt"].needs_se = True


def test_addon_records_are_validated():
    rule = feasible.ADDONS["none"].rule
    with pytest.raises(ValueError, match="requires unknown inputs"):
        feasible.Addon("x", rule, False, False, ("gradient",), (), "x")
    with pytest.raises(ValueError, match="needs_se"):
        feasible.Addon("x", rule, True, True, (), (), "x")
    with pytest.raises(ValueError, match="saliency must name its source"):
        feasible.Addon("x", rule, False, False, ("saliency",), (), "x")


@pytest.mark.parametrize("addon", list(feasible.ADDONS))
def test_every_required_input_is_named_when_missing(addon):
    record = feasible.ADDONS[addon]
    given = {"se_u": S, "se_c": S, "saliency": X > 0}
    for missing in record.requires:
        kwargs = {name: value for name, value in given.items() if name != missing}
        with pytest.raises(ValueError, match=(
            f"The '{missing}' parameter of feasible_update is required for add-on '{addon}'"
        )):
            feasible_update(X, X, addon=addon, **kwargs)
    # With everything it requires, it runs.
    feasible_update(X, X, **{name: given[name] for name in record.requires}, addon=addon)


def test_certified_mask_validation():
    with pytest.raises(ValueError, match=(
        r"The 'weight' argument of certified_mask must be >= 0 \(a per-coordinate weight"
    )):
        feasible.certified_mask(X, X, weight=t([0.5, -0.5]))
    with pytest.raises(ValueError, match="Unknown aggregator 'max'"):
        feasible.certified_mask(X, X, agg="max")
    with pytest.raises(ValueError, match="'alpha' parameter of certified_mask"):
        feasible.certified_mask(X, X, alpha=-1.0)
    with pytest.raises(ValueError, match="same structure"):
        feasible.certified_mask({"w": X}, {"w": X}, weight=[S])


@pytest.mark.parametrize("addon", list(masks.ADDONS))
def test_the_loops_unchecked_update_equals_the_validated_one(addon):
    """compute_update (the engine's inner step) is feasible_update without the checks."""
    gen = torch.Generator().manual_seed(3)
    g_u, g_c = {"w": torch.randn(5, 4, generator=gen)}, {"w": torch.randn(5, 4, generator=gen)}
    se_u, se_c = {"w": torch.rand(5, 4, generator=gen)}, {"w": torch.rand(5, 4, generator=gen)}
    saliency = {"w": torch.rand(5, 4, generator=gen) > 0.5}
    options = dict(addon=addon, agg="lin", alpha=0.3, beta=0.7, p=0.4, saliency=saliency,
                   focus_variant=masks.DEFAULT_FOCUS_VARIANT, renorm=False)
    checked = masks.feasible_update(g_u, g_c, se_u, se_c, **options)
    unchecked = masks.compute_update(g_u, g_c, se_u, se_c, **options)
    assert torch.equal(checked.direction["w"], unchecked.direction["w"])
    assert torch.equal(checked.keep["w"], unchecked.keep["w"])
    assert torch.equal(masks.aggregate_unchecked(g_u, g_c, "min", 0.3, 0.7)["w"],
                       masks.min_g(g_u, g_c, 0.3, 0.7)["w"])
