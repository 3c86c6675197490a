"""Datasets with fixed splits, their file readers and seeded augmentation."""
