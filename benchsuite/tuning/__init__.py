"""Equal-budget search on the validation split, and calibration of sparsity-steering knobs."""
