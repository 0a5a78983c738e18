"""The model owner's side: pretraining the built-in backbone (keys and sealing live in
:mod:`fedgray.backbone` for now, since sites open artifacts with them)."""
