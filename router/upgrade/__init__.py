"""`token-router upgrade`: the whole blue/green procedure as one guided, resumable command.

plan.py decides (pure), journal.py keeps the upgrade document and its audit entries,
checks.py holds the preflight and smoke checks, steps.py the five steps over context.py's Context,
procedure.py runs them in plan order.
"""
