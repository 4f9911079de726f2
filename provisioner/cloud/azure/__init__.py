"""AKS provider: one agent pool (count 1) per claim, registered as cloud ``azure``.

Modules: ``settings`` (configuration from env), ``auth`` (credentials, log redaction), ``mapping``
(pure request/pool mapping), ``errors`` (ARM error classification), ``skus`` (Resource SKUs facts),
``quota`` (vCPU pre-flight), ``ratelimit`` / ``retry`` (call budget), ``provider`` (``AzureCloud``).
"""

from provisioner.cloud.azure.auth import SecretRedactingFilter, build_credential
from provisioner.cloud.azure.env import ConfigError
from provisioner.cloud.azure.mapping import instance_name
from provisioner.cloud.azure.provider import AzureCloud
from provisioner.cloud.azure.settings import AzureSettings

__all__ = [
    "AzureCloud",
    "AzureSettings",
    "ConfigError",
    "SecretRedactingFilter",
    "build_credential",
    "instance_name",
]
