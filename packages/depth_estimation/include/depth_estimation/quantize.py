"""``python3 -m depth_estimation.quantize``: the command's name, kept.

Its code is :mod:`depth_estimation.tools.quantize`.
"""
import sys

from depth_estimation.tools.quantize import main

if __name__ == "__main__":
    sys.exit(main())
