"""The Ray Tune + Optuna adapter: the only package that imports Ray or Optuna (their APIs move; one adapter keeps
that churn in one place, and import-linter holds the line). `launch` drives a study; `searcher` talks to Optuna;
`trainable` is what runs on workers; `recorder` is the driver writing the study folder; `cluster` starts or joins Ray.
"""
