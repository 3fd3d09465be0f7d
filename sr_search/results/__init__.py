"""The results layer: the study folder (`study_dir`), its rows (`store`), progress, fronts (`pareto`), reports and
exports."""
