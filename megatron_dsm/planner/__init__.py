"""Layout and memory planner (tools/plan.py, and ``--dry-run`` of the stage tools).

Given a stage's recipe and a cluster (nodes x GPUs of some memory), the
planner checks the layout rules the stage's own code enforces, by calling the
same validation methods (``TrainConfig.data_parallel_size`` and
``num_microbatches``, ``ModelConfig.check_parallel``, ``RLConfig``,
``RMConfig``), estimates the memory per GPU, and names the first layout that
fits when the given one does not.  Nothing is built: no process group, no
model.

Parts: ``stages`` (the stage's configs as its tool parses them, and the
rules), ``memory`` (the per-GPU estimate), ``search`` (the candidate order),
``report`` (the table), ``cli`` (tools/plan.py and the tools' ``--dry-run``).
The planner sits on top of the layering: it reads the config dataclasses of
models, training and rl; nothing in the library imports it.
"""
