"""What a ``gpu-provisioner controller --cloud azure`` process needs to use a running fake ARM server.

The controller authenticates with workload identity exactly as in an AKS pod: a projected service
account token in a file, exchanged at the fake's token endpoint. The demo, the benchmark and the
end-to-end tests all start the controller this way.
"""

from __future__ import annotations

from pathlib import Path

from fakes.arm.config import DEFAULT_CLUSTER, DEFAULT_LOCATION, DEFAULT_RESOURCE_GROUP, DEFAULT_SUBSCRIPTION

TENANT_ID = "11111111-1111-1111-1111-111111111111"
CLIENT_ID = "22222222-2222-2222-2222-222222222222"
#: Stands in for the projected service-account token (the fake accepts any client assertion).
FEDERATED_TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3ViZS1zeXN0ZW06Z3B1In0."


def controller_env(endpoint: str, ca_bundle: str, authority: str, token_dir: Path) -> dict[str, str]:
    """Azure settings for the fake's default cluster; writes the token file into ``token_dir``."""
    token_file = token_dir / "sa-token"
    token_file.write_text(FEDERATED_TOKEN)
    return {
        "ARM_ENDPOINT": endpoint,
        "ARM_CA_BUNDLE": ca_bundle,
        "AZURE_AUTHORITY_HOST": authority,
        "AZURE_TENANT_ID": TENANT_ID,
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        "ARM_SUBSCRIPTION_ID": DEFAULT_SUBSCRIPTION,
        "ARM_RESOURCE_GROUP": DEFAULT_RESOURCE_GROUP,
        "AZURE_CLUSTER_NAME": DEFAULT_CLUSTER,
        "LOCATION": DEFAULT_LOCATION,
    }
