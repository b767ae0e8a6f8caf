"""anomclust_lite.cli: the command-line tool ``anomclust-lite`` (the only layer that prints).

- :mod:`.main` -- ``main(argv) -> int``: parse and dispatch (:data:`~.main.SUBCOMMANDS`).
- :mod:`.parser` -- the options of the cluster and assign commands.
- :mod:`.cluster` -- ``anomclust-lite FOLDER`` as small steps: check options, build the
  estimator, collect images, prepare the output, extract, fit, write outputs, print the summary.
- :mod:`.summary` -- summary.json of a clustering run; how K was chosen, in words.
- :mod:`.assign` -- ``anomclust-lite assign MODEL.npz NEW_FOLDER``.
- :mod:`.naming` -- ``anomclust-lite name OUT ID=NAME``; the cluster names in force.
- :mod:`.backbones` -- ``anomclust-lite backbones [build wrn50]``.
- :mod:`.cache` -- ``anomclust-lite cache info|clear``; a run's cache folder, opened and trimmed.
- :mod:`.running` -- running the cluster and assign commands: warnings, exit statuses.
- :mod:`.extraction` -- building, checking, running and recording the feature extractor.
- :mod:`.folders` -- checking and probing the folders read and written.
- :mod:`.out_dir` -- what an output folder may hold; one run at a time.
- :mod:`.outputs` -- the writers (CSV, JSON, report, exported cluster folders).
- :mod:`.console` -- progress and warnings on stderr, results on stdout, one-line errors.
- :mod:`.progress` -- progress bars and stage lines (what :mod:`.console` draws).
"""
