"""The search: the distributions a space samples (distributions), search spaces (search_space),
Optuna (study), the plan before Ray runs (plan), Tune's wiring (tuner), and the experiment folder
it leaves (experiment). Imports training and the stages below it."""
