r"""The small New Keynesian model of An and Schorfheide (2007), its data and priors (lecture 5).

The log-linear equilibrium conditions, in the form and notation of Herbst and
Schorfheide (2015, ch. 2): output :math:`y_t` (the percentage deviation of
detrended output from its steady state), inflation :math:`\pi_t` and the
nominal rate :math:`R_t` (quarterly, percentage deviations), government
spending :math:`g_t` and the growth rate of technology :math:`z_t`:

.. math::

    y_t &= E_t y_{t+1} - \tfrac{1}{\tau}\,(R_t - E_t \pi_{t+1} - E_t z_{t+1})
           + g_t - E_t g_{t+1}
           && \text{(dynamic IS curve)} \\
    \pi_t &= \beta E_t \pi_{t+1} + \kappa (y_t - g_t)
           && \text{(New Keynesian Phillips curve)} \\
    R_t &= \rho_R R_{t-1} + (1 - \rho_R)\,[\psi_1 \pi_t + \psi_2 (y_t - g_t)]
           + \sigma_R \varepsilon_{R,t}
           && \text{(Taylor rule with smoothing)} \\
    g_t &= \rho_g g_{t-1} + \sigma_g \varepsilon_{g,t}, \qquad
    z_t = \rho_z z_{t-1} + \sigma_z \varepsilon_{z,t},

with :math:`\beta = 1 / (1 + r^{(A)}/400)` and independent standard normal
shocks :math:`\varepsilon_t = (\varepsilon_{R,t}, \varepsilon_{g,t},
\varepsilon_{z,t})`. With :math:`x_t = (y_t, \pi_t, R_t, g_t, z_t)` (N = 5)
the system is :math:`A E_t x_{t+1} + B x_t + C x_{t-1} + D \varepsilon_t = 0`
(:func:`structural_matrices`), solved by
:func:`lecture_utils.linear_re.solve_linear_re` as
:math:`x_t = P x_{t-1} + Q \varepsilon_t`.

The observables (M = 3) are quarterly per-capita output growth, annualised
inflation and the annualised nominal rate, all in percent:

.. math::

    \mathrm{YGR}_t = \gamma^{(Q)} + y_t - y_{t-1} + z_t, \quad
    \mathrm{INFL}_t = \pi^{(A)} + 4 \pi_t, \quad
    \mathrm{INT}_t = \pi^{(A)} + r^{(A)} + 4 \gamma^{(Q)} + 4 R_t.

Output growth needs last quarter's output, so the state of the state-space
form (:func:`state_space`) is :math:`s_t = (x_t, y_{t-1})` (6,). There is no
measurement error: three shocks for three observables.

This module has one job, the model: its matrices, solution, state-space form,
log-likelihood, priors, the change of variables to unconstrained coordinates
(where :func:`log_posterior` lives), impulse responses and the data. The
solver lives in :mod:`lecture_utils.linear_re`, the filter in
:mod:`lecture_utils.kalman`, the sampler in :mod:`lecture_utils.sampling`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lecture_utils.kalman import kalman_loglik
from lecture_utils.linear_re import discrete_lyapunov, solve_linear_re
from lecture_utils.lss import LSSModel

__all__ = [
    "PARAM_NAMES", "STATE_NAMES", "SHOCK_NAMES", "OBS_NAMES", "PRIORS", "SAMPLE",
    "THETA_BOUND",
    "ASParams", "structural_matrices", "solve", "state_space", "loglik",
    "impulse_responses", "variance_decomposition",
    "constrain", "unconstrain", "log_abs_det_jacobian", "prior_logpdf", "log_prior",
    "sample_prior", "log_posterior", "load_data",
]

PARAM_NAMES = ("tau", "kappa", "psi1", "psi2", "rA", "pi_star", "gamma_q",
               "rho_r", "rho_g", "rho_z", "sigma_r", "sigma_g", "sigma_z")
STATE_NAMES = ("y", "pi", "R", "g", "z")
SHOCK_NAMES = ("eps_R", "eps_g", "eps_z")
OBS_NAMES = ("YGR", "INFL", "INT")

#: The estimation sample, first and last quarter (year + (quarter - 1) / 4).
SAMPLE = (1983.0, 2002.75)


class ASParams(NamedTuple):
    """The 13 parameters, in the units of Herbst and Schorfheide (2015, ch. 2).

    Attributes:
        tau: inverse intertemporal elasticity of substitution (> 0).
        kappa: slope of the Phillips curve (0 < kappa < 1 under the prior).
        psi1, psi2: responses of the policy rate to inflation and to the output gap (> 0).
        rA: steady-state real rate, annualised percent (> 0); beta = 1 / (1 + rA / 400).
        pi_star: steady-state (target) inflation, annualised percent (> 0).
        gamma_q: steady-state growth of technology, quarterly percent.
        rho_r, rho_g, rho_z: interest-rate smoothing and the AR(1) coefficients
            of g and z, in (0, 1).
        sigma_r, sigma_g, sigma_z: shock standard deviations, percent (> 0).

    Each field is a scalar, or an array of one common batch shape.
    """

    tau: jax.Array
    kappa: jax.Array
    psi1: jax.Array
    psi2: jax.Array
    rA: jax.Array
    pi_star: jax.Array
    gamma_q: jax.Array
    rho_r: jax.Array
    rho_g: jax.Array
    rho_z: jax.Array
    sigma_r: jax.Array
    sigma_g: jax.Array
    sigma_z: jax.Array


# --- the model ---------------------------------------------------------------------------

def structural_matrices(p: ASParams):
    r"""The equilibrium conditions as :math:`A E_t x_{t+1} + B x_t + C x_{t-1} + D \varepsilon_t = 0`.

    Rows: IS curve, Phillips curve, Taylor rule, g, z; columns of A, B, C:
    :data:`STATE_NAMES`; columns of D: :data:`SHOCK_NAMES`.

    Returns:
        ``(A, B, C, D)``: (5, 5), (5, 5), (5, 5), (5, 3).
    """
    beta = 1.0 / (1.0 + p.rA / 400.0)
    inv_tau, k, r = 1.0 / p.tau, p.kappa, p.rho_r
    a_r, a_y = (1 - r) * p.psi1, (1 - r) * p.psi2
    zero, one = jnp.zeros_like(inv_tau), jnp.ones_like(inv_tau)
    A = jnp.array([[-one, -inv_tau, zero, one, -inv_tau],
                   [zero, -beta, zero, zero, zero],
                   [zero] * 5, [zero] * 5, [zero] * 5])
    B = jnp.array([[one, zero, inv_tau, -one, zero],
                   [-k, one, zero, k, zero],
                   [-a_y, -a_r, one, a_y, zero],
                   [zero, zero, zero, one, zero],
                   [zero, zero, zero, zero, one]])
    C = jnp.zeros((5, 5)).at[2, 2].set(-r).at[3, 3].set(-p.rho_g).at[4, 4].set(-p.rho_z)
    D = jnp.zeros((5, 3)).at[2, 0].set(-p.sigma_r).at[3, 1].set(-p.sigma_g)
    D = D.at[4, 2].set(-p.sigma_z)
    return A, B, C, D


def solve(p: ASParams):
    """The rational-expectations solution ``x_t = P x_{t-1} + Q eps_t``.

    Returns:
        ``(P (5, 5), Q (5, 3), ok ())``: ``ok`` is False where the model is
        indeterminate or explosive (then P and Q are finite but meaningless).
        Eagerly such a point raises ``ValueError`` (from the solver).
    """
    sol = solve_linear_re(*structural_matrices(p))
    return sol.P, sol.Q, sol.ok


def _measurement(p: ASParams):
    """G (3, 6) on the state ``(x_t, y_{t-1})`` and the constant (3,) of the observables."""
    G = jnp.array([[1.0, 0, 0, 0, 1, -1],
                   [0, 4, 0, 0, 0, 0],
                   [0, 0, 4, 0, 0, 0]])
    const = jnp.stack([p.gamma_q, p.pi_star, p.pi_star + p.rA + 4 * p.gamma_q])
    return G, const


def _augment(P, Q):
    """Transition (6, 6) and shock loading (6, 3) of ``s_t = (x_t, y_{t-1})``."""
    A = jnp.zeros((6, 6)).at[:5, :5].set(P).at[5, 0].set(1.0)
    C = jnp.zeros((6, 3)).at[:5].set(Q)
    return A, C


def state_space(p: ASParams):
    r"""The model as the book's linear state-space model, with its stationary start.

    ``s_{t+1} = A s_t + C w_{t+1}``, ``YOBS_t - const = G s_{t+1}`` (no
    measurement error: ``H`` is (3, 1) zero), ``s_0 ~ N(0, Sigma0)`` with
    ``Sigma0 = A Sigma0 A' + C C'`` the stationary covariance. Since ``y[t]``
    observes ``s_{t+1}``, the first observation sees a state drawn from the
    stationary distribution, as in Herbst and Schorfheide.

    Where the model is not determinate, ``P`` and ``Q`` are replaced by zero
    (so that everything stays finite); :func:`loglik` then returns ``-inf``.

    Returns:
        ``(model, mu0 (6,), Sigma0 (6, 6), const (3,), ok ())``.
    """
    P, Q, ok = solve(p)
    P = jnp.where(ok, P, 0.0)
    Q = jnp.where(ok, Q, 0.0)
    A, C = _augment(P, Q)
    G, const = _measurement(p)
    Sigma0 = discrete_lyapunov(A, C @ C.T)
    Sigma0 = 0.5 * (Sigma0 + Sigma0.T)
    model = LSSModel(A, C, G, jnp.zeros((3, 1)))
    return model, jnp.zeros(6), Sigma0, const, ok


def loglik(p: ASParams, y, *, jitter: float = 1e-8):
    """Gaussian log-likelihood of the observables ``y`` (T, 3) in percent.

    ``y`` minus the model's constant goes through
    :func:`lecture_utils.kalman.kalman_loglik` (``jitter`` as there).
    ``-inf`` (with a finite gradient) where the model is indeterminate or
    explosive, under ``jit``/``grad``/``vmap``.
    """
    model, mu0, Sigma0, const, ok = state_space(p)
    ll = kalman_loglik(model, mu0, Sigma0, y - const, jitter=jitter)
    return jnp.where(ok, ll, -jnp.inf)


def impulse_responses(p: ASParams, horizon: int):
    """Responses of the states to one-standard-deviation shocks.

    Returns:
        (horizon, 5, 3): entry ``[h, i, k]`` is ``d x_{t+h, i} / d eps_{t, k}``,
        i.e. ``(P^h Q)[i, k]``, for h = 0, ..., horizon - 1.
    """
    P, Q, _ = solve(p)

    def step(X, _):
        return P @ X, X

    _, out = jax.lax.scan(step, Q, None, length=horizon)
    return out


def variance_decomposition(p: ASParams, horizon: int):
    """Shares of each shock in the forecast-error variance of the observables.

    Returns:
        (horizon, 3, 3): entry ``[h, m, k]`` is the share of shock ``k`` in the
        variance of the ``(h + 1)``-step-ahead forecast error of observable
        ``m``; the shares add up to one over ``k``.
    """
    P, Q, _ = solve(p)
    A, C = _augment(P, Q)
    G, _ = _measurement(p)

    def step(X, _):
        return A @ X, G @ X

    _, responses = jax.lax.scan(step, C, None, length=horizon)  # (horizon, 3, 3)
    contributions = jnp.cumsum(responses**2, axis=0)
    return contributions / jnp.sum(contributions, axis=-1, keepdims=True)


# --- priors (Herbst and Schorfheide 2015, Table 2.2) ---------------------------------------

#: The prior of each parameter: ``(family, a, b)`` with ``gamma`` (mean, sd),
#: ``uniform`` (lower, upper), ``normal`` (mean, sd) and ``invgamma`` (s, nu):
#: :math:`p(\sigma) \propto \sigma^{-\nu-1} e^{-\nu s^2 / (2 \sigma^2)}`.
PRIORS = {
    "tau": ("gamma", 2.0, 0.5),
    "kappa": ("uniform", 0.0, 1.0),
    "psi1": ("gamma", 1.5, 0.25),
    "psi2": ("gamma", 0.5, 0.25),
    "rA": ("gamma", 0.5, 0.5),
    "pi_star": ("gamma", 7.0, 2.0),
    "gamma_q": ("normal", 0.4, 0.2),
    "rho_r": ("uniform", 0.0, 1.0),
    "rho_g": ("uniform", 0.0, 1.0),
    "rho_z": ("uniform", 0.0, 1.0),
    "sigma_r": ("invgamma", 0.4, 4.0),
    "sigma_g": ("invgamma", 1.0, 4.0),
    "sigma_z": ("invgamma", 0.5, 4.0),
}

# How each parameter is mapped to the real line.
_LOG = ("tau", "psi1", "psi2", "rA", "pi_star", "sigma_r", "sigma_g", "sigma_z")
_LOGIT = ("kappa", "rho_r", "rho_g", "rho_z")


def prior_logpdf(name: str, x):
    """Log prior density of parameter ``name`` at ``x`` (any shape), from :data:`PRIORS`."""
    family, a, b = PRIORS[name]
    if family == "gamma":
        shape, scale = (a / b) ** 2, b**2 / a
        return ((shape - 1) * jnp.log(x) - x / scale - shape * jnp.log(scale)
                - jax.scipy.special.gammaln(shape))
    if family == "uniform":
        return jnp.where((x > a) & (x < b), -jnp.log(b - a), -jnp.inf)
    if family == "normal":
        return -0.5 * ((x - a) / b) ** 2 - jnp.log(b) - 0.5 * jnp.log(2 * jnp.pi)
    s, nu = a, b  # invgamma
    return (jnp.log(2.0) - jax.scipy.special.gammaln(nu / 2) + (nu / 2) * jnp.log(nu * s**2 / 2)
            - (nu + 1) * jnp.log(x) - nu * s**2 / (2 * x**2))


def log_prior(p: ASParams):
    """Log prior density of the natural parameters: the sum over :data:`PRIORS`.

    The prior here is not truncated to the determinacy region; the likelihood
    is ``-inf`` outside it, so the posterior is (Herbst and Schorfheide
    truncate the prior itself, which changes only its normalising constant).
    """
    return sum(prior_logpdf(name, getattr(p, name)) for name in PARAM_NAMES)


def sample_prior(key, shape=()) -> ASParams:
    """Independent draws from :data:`PRIORS`, each field of ``shape`` (not truncated)."""
    keys = dict(zip(PARAM_NAMES, jax.random.split(key, len(PARAM_NAMES))))
    out = {}
    for name in PARAM_NAMES:
        family, a, b = PRIORS[name]
        k = keys[name]
        if family == "gamma":
            out[name] = jax.random.gamma(k, (a / b) ** 2, shape) * b**2 / a
        elif family == "uniform":
            out[name] = jax.random.uniform(k, shape, minval=a, maxval=b)
        elif family == "normal":
            out[name] = a + b * jax.random.normal(k, shape)
        else:  # invgamma (s, nu): sigma^2 = nu s^2 / chi^2_nu
            chi2 = 2.0 * jax.random.gamma(k, b / 2, shape)
            out[name] = jnp.sqrt(b * a**2 / chi2)
    return ASParams(**out)


# --- unconstrained coordinates -----------------------------------------------------------

def constrain(theta) -> ASParams:
    """Natural parameters from ``theta`` (13, *batch) in R^13.

    ``log`` for the positive parameters, ``logit`` for those in (0, 1),
    ``gamma_q`` unchanged; ``theta`` is ordered as :data:`PARAM_NAMES`.
    """
    out = {}
    for i, name in enumerate(PARAM_NAMES):
        t = theta[i]
        out[name] = jnp.exp(t) if name in _LOG else jax.nn.sigmoid(t) if name in _LOGIT else t
    return ASParams(**out)


def unconstrain(p: ASParams):
    """Inverse of :func:`constrain`: (13, *batch) unconstrained coordinates."""
    out = []
    for name in PARAM_NAMES:
        x = jnp.asarray(getattr(p, name), dtype=jnp.float64)
        out.append(jnp.log(x) if name in _LOG else jnp.log(x) - jnp.log1p(-x)
                   if name in _LOGIT else x)
    return jnp.stack(out)


def log_abs_det_jacobian(theta):
    r"""log |det d p / d theta| of :func:`constrain` (diagonal): the sum of
    :math:`\theta_i` for the ``log`` coordinates and of
    :math:`\log \sigma(\theta_i) + \log \sigma(-\theta_i)` for the ``logit`` ones."""
    total = 0.0
    for i, name in enumerate(PARAM_NAMES):
        if name in _LOG:
            total = total + theta[i]
        elif name in _LOGIT:
            total = total + jax.nn.log_sigmoid(theta[i]) + jax.nn.log_sigmoid(-theta[i])
    return total


#: Coordinates with ``|theta_i|`` above this are outside the posterior's support
#: (``log_posterior`` is ``-inf`` there, with a zero gradient): ``exp(30)`` is
#: 1e13, and the prior mass beyond is below 1e-12. Without the bound, a
#: sampler's trial step to ``theta_i = 800`` would hand the solver and the
#: filter infinite matrices (NaN values and gradients, LAPACK warnings).
THETA_BOUND = 30.0

# The centre of the prior in unconstrained coordinates (a determinate point):
# where theta is out of bounds, the model is evaluated here and discarded.
_SAFE_THETA = np.array([np.log(2.0), 0.0, np.log(1.5), np.log(0.5), np.log(0.5),
                        np.log(7.0), 0.4, 0.0, 0.0, 0.0, np.log(0.4), 0.0, np.log(0.5)])


def log_posterior(theta, y):
    """Unnormalised log posterior of ``theta`` (13,), unconstrained, given ``y`` (T, 3).

    ``-inf`` where the model is not determinate or some ``|theta_i|`` exceeds
    :data:`THETA_BOUND`, with a finite gradient under ``jit``/``grad``/``vmap``.
    """
    inside = jnp.all(jnp.abs(theta) <= THETA_BOUND)
    theta = jnp.where(inside, theta, _SAFE_THETA)
    p = constrain(theta)
    value = log_prior(p) + log_abs_det_jacobian(theta) + loglik(p, y)
    return jnp.where(inside, value, -jnp.inf)


# --- data --------------------------------------------------------------------------------

def load_data(start: float = SAMPLE[0], end: float = SAMPLE[1]):
    """The three observables from statsmodels' ``macrodata``, ``start`` to ``end``.

    Output growth ``100 Delta log(realgdp / pop)`` (quarterly percent), CPI
    inflation ``infl`` (annualised percent, ``400 Delta log cpi``) and the
    three-month Treasury bill rate ``tbilrate`` (annualised percent; a proxy
    for the federal funds rate of Herbst and Schorfheide).

    Returns:
        ``(dates (T,), y (T, 3))`` NumPy arrays, columns :data:`OBS_NAMES`.
    """
    from lecture_utils.data import load_macrodata

    dates, data = load_macrodata()
    log_gdp_pc = np.log(data["realgdp"].to_numpy() / data["pop"].to_numpy())
    growth = np.concatenate([[np.nan], 100 * np.diff(log_gdp_pc)])
    y = np.column_stack([growth, data["infl"].to_numpy(), data["tbilrate"].to_numpy()])
    keep = (dates >= start - 1e-9) & (dates <= end + 1e-9)
    if dates[keep][0] == dates[0]:
        raise ValueError(f"start must be after {dates[0]} (growth needs the quarter before)")
    return dates[keep], y[keep]
