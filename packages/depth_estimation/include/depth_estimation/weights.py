"""``python3 -m depth_estimation.weights``: the command's name, kept.

Its code is :mod:`depth_estimation.tools.weights`.
"""
import sys

from depth_estimation.tools.weights import main

if __name__ == "__main__":
    sys.exit(main())
