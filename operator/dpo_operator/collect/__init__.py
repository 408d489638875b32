"""The collection runtime: agent episodes with test-time compute -> scored candidates -> preference pairs."""
