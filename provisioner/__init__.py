"""gpu-provisioner: Karpenter Machine/NodeClaim lifecycle on AKS agent pools."""

__version__ = "0.1.0"
