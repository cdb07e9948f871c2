"""The pipeline layer: command-line options and TOML configs (:mod:`~dmf.pipeline.options`)
and the nightly run (:mod:`~dmf.pipeline.nightly`). The library never imports it."""
