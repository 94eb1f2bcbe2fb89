"""The book's data: series from statsmodels' quarterly US macroeconomic data set.

This module has one job: load the data the lectures estimate on, from one
place, so that a lecture, its tests and the benchmarks cannot drift apart.
statsmodels ships the data set (203 quarters, 1959Q1-2009Q3), so nothing is
downloaded. A lecture loads its series in a visible cell, a few lines a reader
can change, and a hidden cell asserts that they equal the function here, which
the tests and benchmarks import.

statsmodels is imported inside the functions (it comes with the ``lectures``
extra), so ``import lecture_utils.data`` needs only numpy.
"""

import numpy as np

__all__ = ["load_macrodata", "load_gdp"]


def load_macrodata():
    """statsmodels' quarterly US macroeconomic data, 1959Q1-2009Q3, and its dates.

    Returns:
        ``(dates, data)``: ``dates`` a (203,) NumPy array of ``year + (quarter - 1) / 4``
        (1959.0, 1959.25, ...); ``data`` the (203, 14) pandas DataFrame of
        ``statsmodels.api.datasets.macrodata`` (``realgdp``, ``infl``,
        ``tbilrate``, ``pop``, ...; see its ``NOTE``).

    Example:

    >>> dates, data = load_macrodata()
    >>> dates[[0, -1]].tolist(), data.shape
    ([1959.0, 2009.5], (203, 14))
    """
    import statsmodels.api as sm

    data = sm.datasets.macrodata.load_pandas().data
    dates = data["year"].to_numpy() + (data["quarter"].to_numpy() - 1) / 4
    return dates, data


def load_gdp():
    """US log real GDP times 100, quarterly 1959Q1-2009Q3 (lecture 4's data).

    Returns:
        ``(dates, y)``, both (203,) NumPy arrays: dates as in
        :func:`load_macrodata`, ``y = 100 log(realgdp)``, so that a change of
        one unit is a change of about one per cent.
    """
    dates, data = load_macrodata()
    return dates, 100 * np.log(data["realgdp"].to_numpy())
