"""Multi-site deployment on Flower's deployment engine: credentials, launch helpers, a demo."""
