"""Chi-square gates for reprojection residuals, one place for every optimiser and check.

A residual ``e`` of ``d`` pixels (2: image point; 3: image point and right-image
x, stereo or RGB-D) weighted by its keypoint's level variance ``sigma^2`` is an
outlier when ``e^T e / sigma^2`` exceeds the chi-square quantile with ``d``
degrees of freedom (the values ORB-SLAM uses; ``tests/geometry/test_chi2.py``
checks them against ``scipy.stats.chi2.ppf``).
"""

CHI2_2DOF_95 = 5.991  # mono residual, 95 %: pose optimisation, local BA, new-point checks
CHI2_3DOF_95 = 7.815  # stereo / RGB-D residual (u, v, u_right), 95 %
CHI2_2DOF_99 = 9.21  # mono residual, 99 %: RANSAC inlier gate of loop verification (ORB-SLAM's Sim3Solver)
