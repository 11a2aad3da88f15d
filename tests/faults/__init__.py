"""Fault runs: kills, outages and floods against real server processes on loopback."""
