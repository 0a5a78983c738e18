"""The isolated runtime: a sealed artifact served from another process, as the site's own
child (:mod:`~fedgray.backbone.runtime.isolated`) or as a service under its own OS identity
(:mod:`~fedgray.backbone.runtime.service`), speaking one pickle-free schema
(:mod:`~fedgray.backbone.runtime.wire`) checked against the published interface
(:mod:`~fedgray.backbone.runtime.serve`)."""
