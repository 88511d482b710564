"""Reproducing the paper's ablations: ``plan`` (tables, protocols, runs and their status, training
what is missing), ``report`` (aggregation into ``results/``) and ``cli`` (``litefer reproduce``)."""
