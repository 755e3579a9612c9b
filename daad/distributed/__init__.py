"""Running daad's jobs on a Ray cluster (the optional extra ``daad[ray]``).

- :mod:`daad.distributed.cluster`: connecting to Ray (a local one or an address), the
  resources a task asks for (one GPU where the cluster has GPUs, one CPU otherwise), and
  waiting for tasks with a deadline;
- :mod:`daad.distributed.synthesis`: a generated dataset written by Ray tasks, byte for
  byte the folder one process writes, resumable after a lost driver;
- :mod:`daad.distributed.sampling`: CDM and DualAnoDiff sampling split across GPUs;
- :mod:`daad.distributed.preview`: the contact sheet of an output written on Ray;
- :mod:`daad.distributed.runs`: a resumable list of runs (one Ray task each) whose results
  are appended to a table, for evaluation sweeps.

Ray is imported only here and only when a job runs on it.
"""
