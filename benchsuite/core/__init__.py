"""What everything else builds on: the method contract, the budget and plan, the registries, run
identity, the run record's names, errors.
"""
