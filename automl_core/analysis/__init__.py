"""The analysis layer: inspection, latent maps, leaderboard tables, charts, progress, export."""
