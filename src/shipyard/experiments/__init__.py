"""Online experiments: deterministic assignment through the traffic policy, metrics per arm
from the prediction log joined with outcomes, and tests that stay valid when you look at
the results every day (always-valid confidence sequences), beside a fixed-horizon test and a
sample-size calculator. See ``docs/experiments.md``."""
