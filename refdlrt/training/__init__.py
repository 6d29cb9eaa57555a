"""Layer 5, training: the trainer with its checkpoints, run reports and the datasets.
"""
