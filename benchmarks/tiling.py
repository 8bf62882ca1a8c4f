"""Tiled prediction benchmark; the code lives in `unetkit.bench.tiling` (`unetkit bench` runs it too).

python benchmarks/tiling.py [--device cpu|cuda] [--quick] [--out FILE.json]
"""

from unetkit.bench.tiling import main

if __name__ == "__main__":
    main()
