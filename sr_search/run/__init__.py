"""The run layer: data, training, metrics and timing of one candidate (`trial`), what a study runs (`plan`,
`resources`), and the Ray Tune + Optuna adapter that runs it (`tune`)."""
