"""Flower's processes, below both ``fedgray run`` (:mod:`fedgray.fl.simulation`) and the
multi-site deployment (:mod:`fedgray.deploy`): the command lines for Flower's executables
and the ``flwr`` CLI (:mod:`~fedgray.launch.commands`), starting and stopping them
(:mod:`~fedgray.launch.processes`, :mod:`~fedgray.launch.reaper`), the app folder
``flwr run`` submits (:mod:`~fedgray.launch.app_folder`) and the bell a site's SuperNode rings for
its ClientApp process (:mod:`~fedgray.launch.doorbell`)."""
