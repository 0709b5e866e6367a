"""Reports of a run: results.json, results.csv, report.md with the Pareto plot, and the table the CLI prints.

May import: ``edgeopt.errors``, ``edgeopt.core``.
"""
