"""Simulation: the simulated model server (sim-server) and the fleet simulator."""
