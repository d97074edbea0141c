"""The chi-square gates are the quantiles they claim to be."""

import pytest
from scipy.stats import chi2

from slam.geometry.chi2 import CHI2_2DOF_95, CHI2_2DOF_99, CHI2_3DOF_95


@pytest.mark.parametrize("value,dof,p", [(CHI2_2DOF_95, 2, 0.95), (CHI2_3DOF_95, 3, 0.95), (CHI2_2DOF_99, 2, 0.99)])
def test_gate_is_the_chi_square_quantile(value, dof, p):
    assert value == pytest.approx(chi2.ppf(p, dof), abs=5e-3)
