"""Hayase et al., "Downstream Augmentation Generation for Contrastive Learning": replication package."""
