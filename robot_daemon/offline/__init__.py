"""Offline jobs on recorded bags: train, evaluate (beside a logistic baseline), replay."""
