"""The site's room: the ClientApp, what a site does with the global adapters (train with the
one local trainer, or evaluate), its SecAgg+ mods, its own durable state and node config."""
