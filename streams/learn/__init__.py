"""Learning a plan's points from outcomes (`leadscore plans fit`).

A package of its own because it is the one place that uses scikit-learn and numpy (the
optional `learn` extra): only `streams.learn.model` imports them, and only the `plans fit`
command imports that, so the worker, the backtest and `plans evaluate` never load them.
"""
