"""Probes of trained networks: representation probes and linear regions.

Modules: probes, regions. Floor 3: imports only checks, data, estimators, learn and itself
(tests/test_layout.py).
"""
