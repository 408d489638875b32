"""Pure builders of every child object the operator creates: spec and configuration in, manifest or request body
out. No API calls, so each is unit-tested against golden manifests (tests/golden/)."""
