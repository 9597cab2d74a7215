"""``fiscalflow bench SCENARIO``: the issue-8 scenarios, each on an isolated local stack of its own.

``corpus`` generates (once per day, cached) the invoices every scenario draws from; ``harness`` starts
a stack, places invoices on its issuers, starts stages, samples processes and metrics and tears down;
one module per scenario; ``cli`` is the typer group.
"""
