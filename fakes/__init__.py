"""Offline cloud for tests and demos: in-memory FakeCloud, fake ARM server, node simulator."""
