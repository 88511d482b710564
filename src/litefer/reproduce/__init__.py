"""Reproducing the paper's ablations: ``plan`` (tables, protocols, runs and their status, training
what is missing) and ``report`` (aggregation into ``results/``); ``litefer reproduce`` is
:mod:`litefer.cli.reproduce`."""
