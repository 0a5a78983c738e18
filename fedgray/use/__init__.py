"""Using a trained model: predictions, evaluation, signed bundles and model cards."""
