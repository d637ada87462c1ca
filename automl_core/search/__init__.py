"""The search layer: strategies, samplers, pruners, the objective, workers and the supervisor."""
