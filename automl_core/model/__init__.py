"""The model layer: the search space, blocks, recipes, models, training and datasets."""
