"""The enclave runtime: the monitor (keys, policy, egress) and the runners (user code).

``python -I -m confidential_nb.enclave`` starts the monitor. The monitor
starts a zygote (``confidential_nb.enclave.zygote``) that has imported numpy
and pandas and forks one runner per run; runners never hold a key.
"""
