"""The recommendation solution: MovieLens on a per-user temporal protocol, tuned baselines,
a two-stage retrieval + ranking system with session personalization, served as a ranked list.

Modules: :mod:`.data` (loading, variants, the split), :mod:`.metrics` (recall@k, NDCG@k,
evaluation of any scorer, bootstrap intervals over users). See ``docs/recsys.md``.
"""
