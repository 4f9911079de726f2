"""Lifecycle steps as pure decisions: launch, registration, initialization, liveness."""
