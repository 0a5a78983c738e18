"""The model owner's side: keys (:mod:`~fedgray.owner.keys`), sealing artifacts
(:mod:`~fedgray.owner.seal`), revoking them (:mod:`~fedgray.owner.revocation`), pretraining
the built-in backbone (:mod:`~fedgray.owner.pretrain`) and their commands
(:mod:`~fedgray.owner.cli`). Sites open what the owner writes with :mod:`fedgray.backbone`
alone, which never imports this room."""
