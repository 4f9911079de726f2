"""The claim reconciler: reads the world, runs the lifecycle steps, applies their decisions."""
