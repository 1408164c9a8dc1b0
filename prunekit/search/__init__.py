"""Model + data in, a chosen allocation out: sensitivity per group, search spaces, cost models,
strategies (greedy, backtracking, Optuna, RL, gates) and Pareto fronts.

Terms: a *ratio* is the fraction of a group's channels removed; a *configuration* maps each
dimension of a :class:`SearchSpace` (a group's kept width, a block kept or not) to one choice; the
*proxy* is the cheap metric candidates are ranked by (:class:`Proxy`).
"""

from prunekit.search.proxy import Proxy as Proxy
from prunekit.search.proxy import reestimated_bn as reestimated_bn
from prunekit.search.sensitivity import SENSITIVITY_FILE as SENSITIVITY_FILE
from prunekit.search.sensitivity import sensitivity as sensitivity

__all__ = ["Proxy", "reestimated_bn", "sensitivity", "SENSITIVITY_FILE"]
