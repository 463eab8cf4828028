"""A search at a glance: report.html with its plots (report). Imports deploy and the stages below it."""
