r"""A trend-cycle model of log real GDP and its priors (lecture 4).

The unobserved-components model of :cite:`Clark1987` and :cite:`Harvey1989`:
log real GDP (times 100) is a local linear trend plus a stationary AR(2)
cycle,

.. math::

    y_t = \tau_t + c_t, \qquad
    \tau_{t+1} = \tau_t + \beta_t + \sigma_\eta \eta_{t+1}, \qquad
    \beta_{t+1} = \beta_t + \sigma_\zeta \zeta_{t+1},

    c_{t+1} = \phi_1 c_t + \phi_2 c_{t-1} + \sigma_\varepsilon \varepsilon_{t+1},

with standard normal shocks; :math:`\eta` and :math:`\varepsilon` have
correlation :math:`\rho` (zero in Clark's model, free in the model of
:cite:`Morley2003`), :math:`\zeta` is independent of both. In the book's
state-space form, :math:`x_{t+1} = A x_t + C w_{t+1}` and :math:`y_t = G x_t`
for :math:`t = 1, \dots, T`, the state is
:math:`x_t = (\tau_t, \beta_t, c_t, c_{t-1})`, row ``y[t]`` of the data (python
index) observes :math:`x_{t+1}`, and the prior of :math:`x_0` is that of
:func:`initial_moments`.

This module has one job, the model: its state-space form, log-likelihood,
priors, and the change of variables to unconstrained coordinates, where
:func:`log_posterior` lives. The data come from :mod:`lecture_utils.data`
(``load_gdp``) and the sampler from :mod:`lecture_utils.sampling`.

The lecture ``lectures/bayesian_estimation.md`` shows each piece of this
module in a cell of its own and checks that the two agree; the tests import
the module.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lecture_utils.kalman import kalman_loglik
from lecture_utils.lss import LSSModel

__all__ = [
    "PARAM_NAMES", "TREND_PRIOR_VAR", "PRIOR_SCALES", "NBER_RECESSIONS",
    "TrendCycleParams", "trend_cycle_model", "ar2_stationary_cov", "initial_moments",
    "loglik", "pacf_to_ar", "ar_to_pacf", "constrain", "unconstrain",
    "log_abs_det_jacobian", "log_prior", "sample_prior", "log_posterior",
]

PARAM_NAMES = ("sigma_level", "sigma_slope", "sigma_cycle", "phi1", "phi2")

#: Prior variance of each trend state (level and slope) around its prior mean.
TREND_PRIOR_VAR = 100.0

#: Scales of the half-normal priors of the three shock standard deviations.
PRIOR_SCALES = (1.0, 0.1, 1.0)

#: US recessions, NBER business-cycle dates (peak quarter, trough quarter),
#: 1960-2009, as years with quarters at 0, 0.25, 0.5, 0.75. Source: NBER,
#: "US Business Cycle Expansions and Contractions", https://www.nber.org/cycles
NBER_RECESSIONS = (
    (1960.25, 1961.0),   # 1960Q2-1961Q1
    (1969.75, 1970.75),  # 1969Q4-1970Q4
    (1973.75, 1975.0),   # 1973Q4-1975Q1
    (1980.0, 1980.5),    # 1980Q1-1980Q3
    (1981.5, 1982.75),   # 1981Q3-1982Q4
    (1990.5, 1991.0),    # 1990Q3-1991Q1
    (2001.0, 2001.75),   # 2001Q1-2001Q4
    (2007.75, 2009.25),  # 2007Q4-2009Q2
)


class TrendCycleParams(NamedTuple):
    """Natural parameters of the trend-cycle model (a pytree of scalars).

    Attributes:
        sigma_level: standard deviation of the trend-level shock.
        sigma_slope: standard deviation of the trend-slope (drift) shock.
        sigma_cycle: standard deviation of the cycle shock.
        phi1, phi2: AR(2) coefficients of the cycle (stationary region).
    """

    sigma_level: jax.Array
    sigma_slope: jax.Array
    sigma_cycle: jax.Array
    phi1: jax.Array
    phi2: jax.Array


def trend_cycle_model(p: TrendCycleParams, rho=0.0) -> LSSModel:
    r"""The ``LSSModel`` of the trend-cycle model: N = 4, K = 3, M = L = 1, H = 0.

    ``rho`` in [-1, 1] is the correlation of the level and cycle shocks: the
    cycle row of ``C`` is :math:`\sigma_\varepsilon (\rho, 0, \sqrt{1 - \rho^2})`,
    so that :math:`C C^\top` has :math:`\rho \sigma_\eta \sigma_\varepsilon` off the
    diagonal. ``rho = 0`` gives the diagonal ``C`` exactly.
    """
    zero, one = jnp.zeros(()), jnp.ones(())
    A = jnp.array([[one, one, zero, zero],
                   [zero, one, zero, zero],
                   [zero, zero, p.phi1, p.phi2],
                   [zero, zero, one, zero]])
    C = jnp.zeros((4, 3)).at[0, 0].set(p.sigma_level).at[1, 1].set(p.sigma_slope)
    C = C.at[2, 0].set(rho * p.sigma_cycle)
    C = C.at[2, 2].set(jnp.sqrt(1 - rho**2) * p.sigma_cycle)
    G = jnp.array([[1.0, 0.0, 1.0, 0.0]])
    return LSSModel(A, C, G, jnp.zeros((1, 1)))


def ar2_stationary_cov(phi1, phi2, sigma):
    r"""(2, 2) stationary covariance of :math:`(c_t, c_{t-1})` for a stationary AR(2).

    :math:`\gamma_0 = \sigma^2 (1 - \phi_2) / ((1 + \phi_2)((1 - \phi_2)^2 - \phi_1^2))`
    and :math:`\gamma_1 = \phi_1 \gamma_0 / (1 - \phi_2)` (Yule-Walker).
    """
    gamma0 = sigma**2 * (1 - phi2) / ((1 + phi2) * ((1 - phi2) ** 2 - phi1**2))
    gamma1 = phi1 * gamma0 / (1 - phi2)
    return jnp.array([[gamma0, gamma1], [gamma1, gamma0]])


def initial_moments(p: TrendCycleParams, y_first, trend_var=TREND_PRIOR_VAR):
    """Prior ``(mu0, Sigma0)`` of ``x_0``, the state in the first quarter.

    The trend level is centred on the first quarter's observation ``y_first``
    and the slope on zero, each with variance ``trend_var`` and independent;
    the cycle starts from its stationary distribution.
    """
    mu0 = jnp.array([y_first, 0.0, 0.0, 0.0])
    Sigma0 = jnp.zeros((4, 4)).at[:2, :2].set(trend_var * jnp.eye(2))
    Sigma0 = Sigma0.at[2:, 2:].set(ar2_stationary_cov(p.phi1, p.phi2, p.sigma_cycle))
    return mu0, Sigma0


def loglik(p: TrendCycleParams, y_first, y, *, rho=0.0, jitter=0.0):
    """Log-likelihood (a scalar) of ``y`` (T,) given the first quarter ``y_first``.

    ``rho`` is the correlation of the level and cycle shocks (as in
    :func:`trend_cycle_model`). The exact filter (``jitter=0``) by default.
    """
    mu0, Sigma0 = initial_moments(p, y_first)
    return kalman_loglik(trend_cycle_model(p, rho), mu0, Sigma0, y[:, None], jitter=jitter)


# --- the stationary AR(2) region through partial autocorrelations -----------------

def pacf_to_ar(r1, r2):
    """AR(2) coefficients from partial autocorrelations in (-1, 1) (Durbin-Levinson)."""
    return r1 * (1 - r2), r2


def ar_to_pacf(phi1, phi2):
    """Inverse of :func:`pacf_to_ar`."""
    return phi1 / (1 - phi2), phi2


# --- unconstrained coordinates -------------------------------------------------------
#
# The level and cycle shocks both move y one for one in the quarter they hit:
# the data measure their total standard deviation s = hypot(sigma_level,
# sigma_cycle) well and its split, the angle alpha = atan2(sigma_cycle,
# sigma_level) in (0, pi/2), much less well. Coordinates (log s, logit(2 alpha / pi))
# keep the two directions apart. In (log sigma_level, log sigma_cycle) the
# posterior is a bent ridge whose well-measured direction turns from one axis
# to the other along it, which one mass matrix cannot whiten (the lecture
# shows it); in these coordinates that direction is log s everywhere.

def constrain(theta) -> TrendCycleParams:
    r"""Natural parameters from ``theta`` (5, *batch) in R^5; each field has shape ``batch``.

    ``theta = (log s, log sigma_slope, u, atanh r1, atanh r2)``:
    :math:`\sigma_{level} = s \cos\alpha`, :math:`\sigma_{cycle} = s \sin\alpha` with
    :math:`\alpha = \tfrac{\pi}{2} \operatorname{sigmoid}(u)`, and ``r1, r2`` the
    partial autocorrelations of the cycle.
    """
    s = jnp.exp(theta[0])
    # cos(pi/2 sigmoid(u)) = sin(pi/2 sigmoid(-u)), accurate as alpha -> pi/2.
    sigma_level = s * jnp.sin(0.5 * jnp.pi * jax.nn.sigmoid(-theta[2]))
    sigma_cycle = s * jnp.sin(0.5 * jnp.pi * jax.nn.sigmoid(theta[2]))
    phi1, phi2 = pacf_to_ar(jnp.tanh(theta[3]), jnp.tanh(theta[4]))
    return TrendCycleParams(sigma_level, jnp.exp(theta[1]), sigma_cycle, phi1, phi2)


def unconstrain(p: TrendCycleParams):
    """Inverse of :func:`constrain`: (5,) unconstrained coordinates."""
    r1, r2 = ar_to_pacf(p.phi1, p.phi2)
    # u = log(alpha / (pi/2 - alpha)), with pi/2 - alpha = atan2(sigma_level, sigma_cycle).
    u = jnp.log(jnp.arctan2(p.sigma_cycle, p.sigma_level)) - jnp.log(
        jnp.arctan2(p.sigma_level, p.sigma_cycle))
    return jnp.stack([jnp.log(jnp.hypot(p.sigma_level, p.sigma_cycle)),
                      jnp.log(p.sigma_slope), u, jnp.arctanh(r1), jnp.arctanh(r2)])


def log_abs_det_jacobian(theta):
    r"""log |det d(sigmas, phi1, phi2) / d theta| for :func:`constrain`.

    The map is block diagonal: polar coordinates contribute
    :math:`|\partial(\sigma_{level}, \sigma_{cycle}) / \partial(s, \alpha)| = s`, then
    :math:`ds / d\theta_0 = s` and :math:`d\alpha / du = \tfrac{\pi}{2} \operatorname{sigmoid}(u)
    \operatorname{sigmoid}(-u)`; :math:`\sigma_{slope}` contributes itself; the
    partial autocorrelations :math:`\prod (1 - r_j^2)`, and
    :math:`|\partial(\phi_1, \phi_2) / \partial(r_1, r_2)| = 1 - r_2`.
    """
    r = jnp.tanh(theta[3:])
    polar = (2.0 * theta[0] + jnp.log(0.5 * jnp.pi) + jax.nn.log_sigmoid(theta[2])
             + jax.nn.log_sigmoid(-theta[2]))
    return polar + theta[1] + jnp.sum(jnp.log1p(-r**2)) + jnp.log1p(-r[1])


# --- priors and posterior --------------------------------------------------------------

def log_prior(p: TrendCycleParams):
    """Log prior density of the natural parameters.

    Half-normal priors with scales :data:`PRIOR_SCALES` on the three standard
    deviations; partial autocorrelations ``r1, r2`` independent uniform on
    (-1, 1), which puts a proper prior on the stationary region of
    ``(phi1, phi2)`` with density ``1 / (4 (1 - phi2))``.
    """
    sigmas = jnp.stack([p.sigma_level, p.sigma_slope, p.sigma_cycle])
    scales = jnp.asarray(PRIOR_SCALES)
    half_normal = jnp.sum(0.5 * jnp.log(2 / jnp.pi) - jnp.log(scales)
                          - 0.5 * (sigmas / scales) ** 2)
    r1, r2 = ar_to_pacf(p.phi1, p.phi2)
    stationary = (jnp.abs(r1) < 1) & (jnp.abs(r2) < 1)
    ar_part = jnp.where(stationary, -jnp.log(4.0) - jnp.log(1 - p.phi2), -jnp.inf)
    return half_normal + ar_part


def sample_prior(key, shape=()):
    """Draws of the natural parameters from :func:`log_prior`, each leaf of ``shape``."""
    k_s, k_r = jax.random.split(key)
    sigmas = jnp.abs(jax.random.normal(k_s, shape + (3,))) * jnp.asarray(PRIOR_SCALES)
    r = jax.random.uniform(k_r, shape + (2,), minval=-1.0, maxval=1.0)
    phi1, phi2 = pacf_to_ar(r[..., 0], r[..., 1])
    return TrendCycleParams(sigmas[..., 0], sigmas[..., 1], sigmas[..., 2], phi1, phi2)


def log_posterior(theta, y_first, y):
    """Unnormalised log posterior density of ``theta`` (5,), unconstrained coordinates."""
    p = constrain(theta)
    return log_prior(p) + log_abs_det_jacobian(theta) + loglik(p, y_first, y)
