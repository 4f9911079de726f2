"""Claim termination: cordon, drain, delete the node and the instance, then drop the finalizer."""
