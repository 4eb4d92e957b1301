"""Serving: an ASGI app (KServe V2, MLflow scoring) over registered versions, with traffic
policies, micro-batching, input validation and a durable prediction log.

``app`` routes, ``runtime`` loads and swaps versions, ``admin`` changes traffic, ``codec``
and ``validation`` turn request bodies into checked rows, ``predlog`` writes every answer.
"""
