"""The dashboard's own code: the only part of aelib that imports Streamlit.

One concern a module, data flowing one way (widget -> typed value -> library call -> cached
result -> drawing):

* ``settings``  deployment switches read from the environment or ``.streamlit/secrets.toml``
* ``state``     this user's session: namespaced keys, remembered widget values, one-shot messages
* ``sources``   image sets as typed values: ``ImageSet`` (the sidebar's data) and ``Images`` (a key
                naming exactly these images); uploads kept for the session
* ``choices``   ``ModelChoice``: a shipped or saved checkpoint, an upload or a run, one stable id each
* ``runs``      this session's training runs: start with a unique name, save, delete, remove
* ``compute``   cached computations keyed by those values' ids (never by hand-built strings)
* ``draw``      arrays in, Streamlit elements out (image rows, heat maps, charts, tables)
* ``widgets``   composite widgets: the training form, a model picker by id
* ``sidebar``   the shared frame: dataset and model pickers, training status
* ``router``    the page list, the navigation, the one-call page preamble
* ``training``, ``reconstruction``, ``latent``, ``anomaly``, ``anomaly_panels``: the panels of one
  page each, so the pages under ``pages/`` stay short views
"""
