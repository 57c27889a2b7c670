"""Fakes of external services for tests: they speak the real wire format on loopback."""
