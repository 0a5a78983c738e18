"""Multi-site deployment on Flower's deployment engine: credentials, roles, site setup, a demo
(Flower's processes themselves are started and stopped by :mod:`fedgray.launch`)."""
