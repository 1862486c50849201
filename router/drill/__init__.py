"""`token-router drill`: the upgrade rehearsed on this machine under load (harness.py), with
its clients (traffic.py) and its report (report.py)."""
