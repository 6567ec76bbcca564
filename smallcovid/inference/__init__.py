"""From a trained model to numbers: the predictor, metrics and Table-1 evaluation."""
