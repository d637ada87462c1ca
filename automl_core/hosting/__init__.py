"""The hosting layer: launching and stopping searches, access (modes, roles), uploads."""
