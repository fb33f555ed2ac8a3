"""Upload bytes → the graph's uint8 input: ``checks`` (header and structure, in the server),
``image`` (the decode itself, plain code), ``workers`` (worker processes and budgets)."""
