"""Benchmarks that ship with the package: `unetkit bench` (training throughput against the device peak and
the peers) and the tiled-prediction comparison (`unetkit.bench.tiling`)."""
