"""The dashboard's own code: the only part of aelib that imports Streamlit.

One concern a module, data flowing one way (widget -> typed value -> library call -> cached
result -> drawing):

* ``settings``  deployment switches read from the environment or ``.streamlit/secrets.toml``
* ``state``     this user's session: namespaced keys, remembered widget values, one-shot messages
* ``sources``   typed values the pages pass around: ``ImageSet`` (data + content key) and
                ``ModelChoice`` (a shipped or saved checkpoint, an upload, a run: one stable id)
* ``runs``      starting, naming, saving and deleting this session's training runs
* ``compute``   cached computations keyed by those values' ids (never by hand-built strings)
* ``draw``      arrays in, Streamlit elements out (image rows, heat maps, loss charts)
* ``sidebar``   the shared frame: dataset and model pickers, training status
* ``router``    the page list, the one-call page preamble, routing of bare page runs
"""
