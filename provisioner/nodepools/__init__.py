"""Kaito's ``karpenter`` mode: static NodePools, our node class, drift within disruption budgets."""
