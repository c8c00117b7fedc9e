"""Backends: one package per backend, one module per op family, the same function names in each.

See ``fastconv._dispatch.REGISTRY`` for the list and the README for the function contract.
"""
