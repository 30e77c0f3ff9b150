"""Fakes that model hardware and Pi-only libraries, shared by the tests."""
