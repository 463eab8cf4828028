"""A search's result put to use: the best checkpoint as a bundle (export) and the bundle judged on
the test split (evaluate). Imports tuning and the stages below it."""
