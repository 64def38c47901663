"""Running plans: hosts in parallel with interrupts held back (``parallel``), the
scripts and their per-step outcomes (``runner``), holding the environment lock
(``lock``), HTTP readiness probes (``health``), and the reporter protocol (``events``)."""
