"""A fake Azure Resource Manager on 127.0.0.1 (HTTPS, private CA) for the real Azure SDK.

Serves AKS agent pools (with long-running operations, provisioning states, one operation per pool
at a time and ARM errors), their machines and deleteMachines, the managed cluster, Resource SKUs,
compute usages (vCPU quota) and an Entra ID token endpoint, plus an admin API under ``/_fake/`` for
fault injection, settings and the request log. See ``README.md`` here for the AKS behaviour it
models, ``server.FakeArm`` for the Python API and ``python -m fakes.arm --help`` for the command line.
"""

from fakes.arm.config import ClusterConfig, FakeArmConfig, Latency
from fakes.arm.faults import HttpFault, PoolFault, RequestRecord
from fakes.arm.hooks import PoolInfo, PoolObserver
from fakes.arm.server import FakeArm, FakeArmThread

__all__ = [
    "ClusterConfig",
    "FakeArm",
    "FakeArmConfig",
    "FakeArmThread",
    "HttpFault",
    "Latency",
    "PoolFault",
    "PoolInfo",
    "PoolObserver",
    "RequestRecord",
]
