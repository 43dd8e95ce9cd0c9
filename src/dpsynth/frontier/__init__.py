"""``dpsynth frontier``: one reproducible privacy-utility sweep (see :func:`dpsynth.frontier.run.run_frontier`)."""
