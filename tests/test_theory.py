"""Tests of feasible.theory: the exact problems and measurements behind the Prop. 1-3 pages."""
import numpy as np
import pytest
import torch

from feasible import theory
from feasible.theory import (
    batch_alignment,
    digits_softmax_problem,
    feasible_cone,
    kkt_fit,
    softmax_ce,
    solve_problem_p,
    step_size_bound,
)


@pytest.fixture(scope="module")
def problem():
    return digits_softmax_problem(seed=0, components=4)


def test_softmax_ce_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    x, theta = rng.normal(size=(7, 3)), rng.normal(size=3 * 4)
    targets = rng.dirichlet(np.ones(4), size=7)
    _, grad = softmax_ce(theta, x, targets)
    eps = 1e-6
    numeric = [(softmax_ce(theta + eps * e, x, targets)[0] - softmax_ce(theta - eps * e, x, targets)[0])
               / (2 * eps) for e in np.eye(theta.size)]
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_uniform_target_loss_is_bounded_by_log_classes(problem):
    assert problem.loss_u(np.zeros_like(problem.theta0))[0] == pytest.approx(np.log(10))
    assert problem.loss_u(problem.theta0)[0] > np.log(10)


def test_problem_p_solution_satisfies_kkt(problem):
    sol = solve_problem_p(problem)
    g_u, g_c = problem.loss_u(sol.theta)[1], problem.loss_c(sol.theta)[1]
    fit = kkt_fit(g_u, g_c)
    assert sol.success and sol.loss_c <= sol.bound + 1e-9
    assert fit.cosine < -0.9999 and fit.residual < 1e-3
    assert fit.lam == pytest.approx(sol.multiplier, rel=1e-3)
    loose = solve_problem_p(problem, slack=5.0)  # inactive: lambda = 0 and g_U = 0
    assert loose.multiplier == pytest.approx(0.0, abs=1e-6)
    assert np.linalg.norm(problem.loss_u(loose.theta)[1]) < 1e-4


def test_kkt_fit_on_hand_made_vectors():
    fit = kkt_fit(np.array([-2.0, 4.0]), np.array([1.0, -2.0]))
    assert (fit.lam, fit.cosine, fit.residual) == pytest.approx((2.0, -1.0, 0.0))


def test_smoothness_bounds_the_hessian(problem):
    theta = problem.theta0
    eps, d = 1e-5, theta.size
    hess = np.array([(problem.loss_c(theta + eps * e)[1] - problem.loss_c(theta - eps * e)[1]) / (2 * eps)
                     for e in np.eye(d)])
    assert np.linalg.eigvalsh((hess + hess.T) / 2)[-1] <= problem.smoothness() + 1e-6


def test_step_size_bound_by_hand_and_edges():
    u, g_u, g_c = np.array([1.0, 0.0]), np.array([2.0, 1.0]), np.array([1.0, -3.0])
    assert step_size_bound(u, g_u, g_c, 4.0) == pytest.approx(2 * 1.0 / 4.0)
    assert step_size_bound(u, g_u, -g_c, 4.0) == 0.0  # infeasible: no guarantee
    with pytest.raises(ValueError, match="'smoothness' parameter of step_size_bound"):
        step_size_bound(u, g_u, g_c, 0.0)
    with pytest.raises(ValueError, match="'u' parameter"):
        step_size_bound(np.zeros(2), g_u, g_c, 1.0)


def test_feasible_cone_holds_exactly_the_feasible_directions():
    g_u, g_c = np.array([0.3, 1.5]), np.array([0.6, -0.6])
    arc = feasible_cone(g_u, g_c, points=50)[1:]
    assert np.all(arc @ g_u >= -1e-12) and np.all(arc @ g_c >= -1e-12)
    assert np.all(feasible_cone(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == 0)  # opposite: empty


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="'forget_fraction' parameter of digits_softmax_problem"):
        digits_softmax_problem(forget_fraction=1.5)
    with pytest.raises(ValueError, match="'slack' parameter of solve_problem_p"):
        solve_problem_p(digits_softmax_problem(components=2), slack=-1.0)


def test_batch_alignment_on_a_stationary_model():
    model, forget, retain = digits_softmax_problem(components=4, ridge=1e-8).as_module()
    records = batch_alignment(model, forget, retain, batch_sizes=[4, 10_000], trials=3)
    exact = [r for r in records if r["batch_size"] == 10_000]
    assert all(r["cosine"] > 0.999 and r["kept"] == 1.0 and r["base_rate"] == 1.0 for r in exact)
    assert all(0.0 <= r["kept"] <= 1.0 for r in records)
    with pytest.raises(ValueError, match="'trials'"):
        batch_alignment(model, forget, retain, batch_sizes=[4], trials=0)


def test_step_outcomes_exact_and_steps_lower_both_losses():
    model, forget, retain = digits_softmax_problem(components=4).as_module()
    # move away from theta0 so that the two losses conflict, then take exact-gradient steps
    with torch.no_grad():
        model.weight.add_(0.5 * torch.randn(model.weight.shape, generator=torch.Generator().manual_seed(0)))
    records = theory.step_outcomes(model, forget, retain, batch_size=10_000, trials=1, lr=1e-3)
    and_step = next(r for r in records if r["mask"] == "and")
    assert and_step["feasible"] and and_step["both_lower"]
    with pytest.raises(ValueError, match="Unknown aggregator 'mean'"):
        theory.step_outcomes(model, forget, retain, batch_size=4, trials=1, lr=0.1, agg="mean")
