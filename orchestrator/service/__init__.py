"""``orchestrate serve``: segsweep as a team's sweep service: a queue with priorities and per-user fair share, each
sweep run by the driver in a process of its own, an HTTP API with per-user tokens, and live web pages; everything a
user sends is hostile input (``policy`` for specs, ``edge`` for requests, ``access`` for tokens; README, "Security
model")."""
