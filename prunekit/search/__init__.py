"""Model + data in, a chosen allocation out: sensitivity per group, search spaces, cost models,
strategies (greedy, backtracking, Optuna, RL, gates) and Pareto fronts.

Terms: a *ratio* is the fraction of a group's channels removed; a *configuration* maps each
dimension of a :class:`SearchSpace` (a group's kept width, a block kept or not, a layer's
factorisation from :mod:`prunekit.search.ranks`) to one choice; the
*proxy* is the cheap metric candidates are ranked by (:class:`Proxy`); the *budget* of a search is
its number of proxy evaluations. The one search interface is
``prunekit.search.search.search(space, objectives, constraints, strategy, budget, seed, evaluator=...)``.
"""

from prunekit.search.cost import Cost as Cost
from prunekit.search.evaluator import Evaluator as Evaluator
from prunekit.search.evaluator import Record as Record
from prunekit.search.evaluator import successive_halving as successive_halving
from prunekit.search.latency_table import LatencyTable as LatencyTable
from prunekit.search.pareto import knee as knee
from prunekit.search.pareto import non_dominated as non_dominated
from prunekit.search.proxy import Proxy as Proxy
from prunekit.search.proxy import reestimated_bn as reestimated_bn
from prunekit.search.search import PARETO_FILE as PARETO_FILE
from prunekit.search.search import SearchResult as SearchResult
from prunekit.search.search import finalists_of as finalists_of
from prunekit.search.search import uniform_start as uniform_start
from prunekit.search.sensitivity import SENSITIVITY_FILE as SENSITIVITY_FILE
from prunekit.search.sensitivity import sensitivity as sensitivity
from prunekit.search.space import SearchSpace as SearchSpace
from prunekit.search.space import build as build
from prunekit.search.strategies import STRATEGIES as STRATEGIES

__all__ = ["Proxy", "reestimated_bn", "sensitivity", "SENSITIVITY_FILE", "SearchSpace", "build", "Cost",
           "LatencyTable", "Evaluator", "Record", "successive_halving", "SearchResult", "PARETO_FILE",
           "non_dominated", "knee", "STRATEGIES", "uniform_start", "finalists_of"]
