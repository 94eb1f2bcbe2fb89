r"""The Stock-Watson (2007) unobserved-components model with stochastic volatility.

Inflation :math:`\pi_t` (per cent a year) is a random-walk trend plus
transitory noise, and the log variances of both shocks are random walks:

.. math::

    \pi_t = \tau_t + e^{h_{\varepsilon,t}/2} \varepsilon_t, \qquad
    \tau_t = \tau_{t-1} + e^{h_{\eta,t}/2} \eta_t, \\
    h_{\varepsilon,t} = h_{\varepsilon,t-1} + \gamma_\varepsilon \nu_{\varepsilon,t},
    \qquad h_{\eta,t} = h_{\eta,t-1} + \gamma_\eta \nu_{\eta,t},

all shocks independent standard normal. Stock and Watson fix
:math:`\gamma_\varepsilon = \gamma_\eta = 0.2`; here they are parameters.
The Kalman filter does not apply (the variances move with the state), but
the model is *conditionally linear*: given the volatility paths, the trend is
a linear-Gaussian state with :math:`A = G = 1`, :math:`C = e^{h_\eta/2}`,
:math:`H = e^{h_\varepsilon/2}`.

Two forms for the filters of :mod:`lecture_utils.particle_filter`, in the
book's timing (``y[t]`` observes the state after the t-th move, from
:math:`x_0` drawn from the initial law):

* the full state :math:`x = (\tau, h_\varepsilon, h_\eta)` (N = 3) for
  :func:`~lecture_utils.particle_filter.bootstrap_filter`: :func:`transition`
  with shocks ``w = (nu_eps, nu_eta, eta)`` (K = 3), :func:`observation`
  (M = 1) and the state-dependent noise loading :func:`observation_scale`;
* the volatilities :math:`z = (h_\varepsilon, h_\eta)` (Nz = 2, K = 2) for
  :func:`~lecture_utils.particle_filter.rb_filter`: :func:`vol_transition` and
  :func:`linear_part`, with the trend's initial law :func:`initial_trend`.

The initial law is part of :class:`UCSVParams` (proper and vague by default:
:math:`\tau_0 \sim N(0, 5^2)`, :math:`h_0 \sim N(0, 2^2)` each).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lecture_utils.lss import LSSModel
from lecture_utils.particle_filter import FilterNoise, bootstrap_filter, rb_filter
from lecture_utils.simulation import simulate_ssm

__all__ = [
    "PRIOR_LOC", "PRIOR_SCALE", "UCSVNoise", "UCSVParams", "draw_noise", "filter_bootstrap",
    "filter_rb", "initial_state", "initial_trend", "initial_vols", "linear_part",
    "load_inflation", "log_prior", "observation", "observation_scale", "particles_model",
    "simulate",
    "to_params", "transition", "transition_logpdf", "vol_transition",
]

#: The prior of each :math:`\log\gamma`: normal, centred at Stock and Watson's 0.2.
PRIOR_LOC = float(np.log(0.2))
PRIOR_SCALE = 1.0


class UCSVParams(NamedTuple):
    """Parameters of the UC-SV model (a pytree; every field differentiable).

    Attributes:
        gamma_eps, gamma_eta: () volatilities of the log variances of the
            transitory and the trend shock (per quarter).
        tau0_mean, tau0_sd: () the initial trend :math:`\\tau_0 \\sim N(m, s^2)`.
        h0_mean, h0_sd: () each initial log variance :math:`h_0 \\sim N(m, s^2)`.
    """

    gamma_eps: float = 0.2
    gamma_eta: float = 0.2
    tau0_mean: float = 0.0
    tau0_sd: float = 5.0
    h0_mean: float = 0.0
    h0_sd: float = 2.0


class UCSVNoise(NamedTuple):
    """The standard normals behind one UC-SV likelihood estimate (a pytree).

    Attributes:
        initial: (P, 3) for the bootstrap filter (tau, h_eps, h_eta), or (P, 2)
            for the Rao-Blackwellised one (h_eps, h_eta).
        filter: the :class:`~lecture_utils.particle_filter.FilterNoise`,
            normals (T, P, 3) or (T, P, 2).
    """

    initial: jax.Array
    filter: FilterNoise


# ----- the full state: bootstrap filter ---------------------------------------------------


def transition(x, w_t, params: UCSVParams, t):
    """``(tau, h_eps, h_eta)`` (3,) -> next; w_t = (nu_eps, nu_eta, eta) (3,)."""
    h_eps = x[1] + params.gamma_eps * w_t[0]
    h_eta = x[2] + params.gamma_eta * w_t[1]
    tau = x[0] + jnp.exp(h_eta / 2) * w_t[2]
    return jnp.stack([tau, h_eps, h_eta])


def transition_logpdf(x_next, x, params: UCSVParams, t):
    """Log density () of :func:`transition`'s move from x to x_next (for backward simulation)."""
    from jax.scipy.stats import norm

    return (norm.logpdf(x_next[1], x[1], params.gamma_eps)
            + norm.logpdf(x_next[2], x[2], params.gamma_eta)
            + norm.logpdf(x_next[0], x[0], jnp.exp(x_next[2] / 2)))


def observation(x, params: UCSVParams, t):
    """The noiseless observation: the trend (1,)."""
    return x[:1]


def observation_scale(x, params: UCSVParams, t):
    """The loading (1, 1) of the transitory shock, :math:`e^{h_\\varepsilon/2}`."""
    return jnp.exp(x[1] / 2).reshape(1, 1)


def initial_state(z, params: UCSVParams):
    """Draws (P, 3) of :math:`x_0 = (\\tau_0, h_{\\varepsilon,0}, h_{\\eta,0})` from normals z (P, 3)."""
    loc = jnp.stack([params.tau0_mean, params.h0_mean, params.h0_mean])
    scale = jnp.stack([params.tau0_sd, params.h0_sd, params.h0_sd])
    return loc + scale * z


# ----- the conditionally linear form: Rao-Blackwellised filter -------------------------------


def vol_transition(z, w_t, params: UCSVParams, t):
    """``(h_eps, h_eta)`` (2,) -> next, with w_t = (nu_eps, nu_eta) (2,)."""
    return z + jnp.stack([params.gamma_eps, params.gamma_eta]) * w_t


def linear_part(z, params: UCSVParams, t):
    """The trend's linear model given the volatilities z = (h_eps, h_eta) of the new date."""
    one = jnp.ones((1, 1))
    return LSSModel(one, jnp.exp(z[1] / 2).reshape(1, 1), one, jnp.exp(z[0] / 2).reshape(1, 1))


def initial_vols(z, params: UCSVParams):
    """Draws (P, 2) of :math:`(h_{\\varepsilon,0}, h_{\\eta,0})` from normals z (P, 2)."""
    return params.h0_mean + params.h0_sd * z


def initial_trend(params: UCSVParams):
    """The law of :math:`\\tau_0`: mean (1,) and covariance (1, 1)."""
    return (jnp.reshape(params.tau0_mean, (1,)),
            jnp.reshape(jnp.asarray(params.tau0_sd) ** 2, (1, 1)))


# ----- likelihood estimates -----------------------------------------------------------------


def draw_noise(key, T: int, num_particles: int, *, rao_blackwellised: bool = True) -> UCSVNoise:
    """The normals for one likelihood estimate: (P, 2) and (T, P, 2) for the RB filter,
    (P, 3) and (T, P, 3) for the bootstrap filter.

    Example:
        >>> noise = draw_noise(jax.random.key(0), T=10, num_particles=50)
        >>> noise.initial.shape, noise.filter.normals.shape
        ((50, 2), (10, 50, 2))
    """
    from lecture_utils.particle_filter import draw_noise as draw_filter_noise

    K = 2 if rao_blackwellised else 3
    k_init, k_filter = jax.random.split(key)
    filter_noise = draw_filter_noise(k_filter, T, num_particles, K)
    return UCSVNoise(jax.random.normal(k_init, (num_particles, K)), filter_noise)


def filter_bootstrap(params: UCSVParams, y, noise: UCSVNoise, **kwargs):
    """:func:`~lecture_utils.particle_filter.bootstrap_filter` of the UC-SV model.

    Args:
        params: :class:`UCSVParams`.
        y: (T, 1) inflation.
        noise: a :class:`UCSVNoise` with ``initial`` (P, 3) and normals (T, P, 3).
        **kwargs: passed on (``ess_threshold``, ``gradient``, ``order``, ``history``).

    Returns:
        A :class:`~lecture_utils.particle_filter.FilterResult`; particles
        (T, P, 3) = (tau, h_eps, h_eta).
    """
    x0 = initial_state(noise.initial, params)
    return bootstrap_filter(transition, observation, observation_scale, params, y, x0,
                            noise.filter, **kwargs)


def filter_rb(params: UCSVParams, y, noise: UCSVNoise, **kwargs):
    """:func:`~lecture_utils.particle_filter.rb_filter` of the UC-SV model.

    Args:
        params: :class:`UCSVParams`.
        y: (T, 1) inflation.
        noise: a :class:`UCSVNoise` with ``initial`` (P, 2) and normals (T, P, 2).
        **kwargs: passed on (``ess_threshold``, ``gradient``, ``order``,
            ``history``, ``jitter``).

    Returns:
        An :class:`~lecture_utils.particle_filter.RBFilterResult`; particles
        (T, P, 2) = (h_eps, h_eta), ``mu``/``Sigma`` the trend's moments.

    Example:
        >>> y = simulate(jax.random.key(0), UCSVParams(), T=20)[1]
        >>> noise = draw_noise(jax.random.key(1), T=20, num_particles=200)
        >>> res = filter_rb(UCSVParams(), y, noise)
        >>> res.mu.shape, bool(jnp.isfinite(res.loglik))
        ((20, 200, 1), True)
    """
    mu0, Sigma0 = initial_trend(params)
    z0 = initial_vols(noise.initial, params)
    return rb_filter(vol_transition, linear_part, params, y, z0, mu0, Sigma0, noise.filter,
                     **kwargs)


# ----- simulation, prior, data ----------------------------------------------------------------


def simulate(key, params: UCSVParams, T: int):
    """Simulate the model: states x (T + 1, 3) from :math:`x_0`, observations y (T, 1).

    ``y[t]`` observes ``x[t + 1]`` (the filters' timing). The states come from
    :func:`~lecture_utils.simulation.simulate_ssm` with :func:`transition`.

    Example:
        >>> x, y = simulate(jax.random.key(0), UCSVParams(), T=5)
        >>> x.shape, y.shape
        ((6, 3), (5, 1))
    """
    k0, kw, kv = jax.random.split(key, 3)
    x0 = initial_state(jax.random.normal(k0, (1, 3)), params)[0]
    w = jax.random.normal(kw, (T, 3))
    x, trend = simulate_ssm(transition, observation, x0, w, None, None, params)
    v = jax.random.normal(kv, (T, 1))
    return x, trend[1:] + jnp.exp(x[1:, 1:2] / 2) * v


def to_params(theta, base: UCSVParams | None = None) -> UCSVParams:
    """``theta = (log gamma_eps, log gamma_eta)`` (2,) -> :class:`UCSVParams`.

    The other fields come from ``base`` (default: :class:`UCSVParams`' defaults).
    """
    base = UCSVParams() if base is None else base
    return base._replace(gamma_eps=jnp.exp(theta[0]), gamma_eta=jnp.exp(theta[1]))


def log_prior(theta):
    r"""Log prior density of ``theta = (log gamma_eps, log gamma_eta)`` (2,).

    Each :math:`\log\gamma \sim N(\log 0.2, 1)` independently: a lognormal
    prior on :math:`\gamma` with median 0.2 (Stock and Watson's value) and
    95% of its mass in (0.028, 1.42).

    Example:
        >>> round(float(log_prior(jnp.log(jnp.array([0.2, 0.2])))), 6)
        -1.837877
    """
    z = (jnp.asarray(theta) - PRIOR_LOC) / PRIOR_SCALE
    return jnp.sum(-0.5 * z**2 - jnp.log(PRIOR_SCALE) - 0.5 * jnp.log(2 * jnp.pi))


def load_inflation():
    """US CPI inflation (per cent a year, statsmodels' ``infl``), 1959Q2-2009Q3.

    Returns:
        ``(dates (202,), y (202, 1))``; 1959Q1 is dropped (``infl`` is 0 there:
        it is a log difference with nothing before it).

    Example:
        >>> dates, y = load_inflation()
        >>> float(dates[0]), float(dates[-1]), y.shape
        (1959.25, 2009.5, (202, 1))
    """
    from lecture_utils.data import load_macrodata

    dates, data = load_macrodata()
    return dates[1:], data["infl"].to_numpy()[1:, None].astype(float)


# ----- the same model in Chopin's particles (the independent reference) ----------------------


def particles_model(params: UCSVParams | None = None):
    """The UC-SV model as a ``particles.state_space_models.StateSpaceModel`` (NumPy).

    An independent implementation for tests and benchmarks: ``particles``'
    bootstrap filter (``particles.SMC(fk=Bootstrap(ssm=model, data=y[:, 0]), ...)``)
    on it estimates the same likelihood as :func:`filter_bootstrap`.
    ``particles`` observes its :math:`X_0`, so its :math:`X_0` is our
    :math:`x_1`: the initial law draws :math:`x_0` and moves it once. Random
    numbers come from NumPy's global generator (``np.random.seed``), as
    ``particles`` draws its own. Needs ``particles`` (0.4).

    Example:
        >>> import particles, particles.state_space_models as ssm
        >>> _, y = load_inflation()
        >>> np.random.seed(0)
        >>> pf = particles.SMC(fk=ssm.Bootstrap(ssm=particles_model(), data=y[:20, 0]), N=500)
        >>> pf.run()
        >>> bool(np.isfinite(pf.logLt))
        True
    """
    from particles import distributions as dists
    from particles import state_space_models as ssm

    params = UCSVParams() if params is None else params
    g_eps, g_eta = float(params.gamma_eps), float(params.gamma_eta)
    loc = np.array([params.tau0_mean, params.h0_mean, params.h0_mean], dtype=float)
    scale = np.array([params.tau0_sd, params.h0_sd, params.h0_sd], dtype=float)

    def move(x):
        """One transition of x (P, 3) = (tau, h_eps, h_eta) in NumPy."""
        nu = np.random.normal(size=x.shape)
        h_eps = x[:, 1] + g_eps * nu[:, 0]
        h_eta = x[:, 2] + g_eta * nu[:, 1]
        return np.stack([x[:, 0] + np.exp(h_eta / 2) * nu[:, 2], h_eps, h_eta], axis=1)

    class Initial(dists.ProbDist):
        dim = 3

        def rvs(self, size=None):
            return move(loc + scale * np.random.normal(size=(size, 3)))

    class Move(dists.ProbDist):
        dim = 3

        def __init__(self, xp):
            self.xp = xp

        def rvs(self, size=None):
            return move(self.xp)

    class UCSV(ssm.StateSpaceModel):
        def PX0(self):
            return Initial()

        def PX(self, t, xp):
            return Move(xp)

        def PY(self, t, xp, x):
            return dists.Normal(loc=x[:, 0], scale=np.exp(x[:, 1] / 2))

    return UCSV()
