#!/usr/bin/env python3
"""ATE/RPE of an estimated trajectory against ground truth: the ``slam-eval`` command as a script.

    python benchmarks/evaluate.py GT EST [--format tum|kitti] [--align se3|sim3|none] ...
"""

import sys

from slam.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
