"""``python3 -m depth_estimation.export``: the command's name, kept.

Its code is :mod:`depth_estimation.tools.export`.
"""
import sys

from depth_estimation.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
