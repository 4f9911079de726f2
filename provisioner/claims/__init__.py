"""Claims: one model of a node request, read from and written to each Karpenter API dialect."""
