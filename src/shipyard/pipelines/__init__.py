"""Lifecycle pipelines: step graphs validated before they run, steps cached by the hash of
their inputs, runs that survive a restart, triggers (a schedule, an alert, a command), the
gated canary rollout and the automated retraining loop. See ``docs/pipelines.md``."""
